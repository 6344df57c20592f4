"""Measuring what generation and training did, in the shapes world: prompt adherence of a model,
adoption of a taught concept, preservation of what it knew (bench/quality.py, tests, projects)."""
