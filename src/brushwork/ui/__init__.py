"""ui floor; see docs/architecture.md."""
