"""formats floor; see docs/architecture.md."""
