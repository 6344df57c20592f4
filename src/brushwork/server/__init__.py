"""server floor; see docs/architecture.md."""
