"""loading floor; see docs/architecture.md."""
