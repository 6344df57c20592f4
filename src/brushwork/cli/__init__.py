"""cli floor; see docs/architecture.md."""
