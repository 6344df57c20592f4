"""jobs floor; see docs/architecture.md."""
