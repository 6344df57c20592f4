"""training floor; see docs/architecture.md."""
