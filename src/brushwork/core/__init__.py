"""core floor; see docs/architecture.md."""
