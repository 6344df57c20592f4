"""library floor; see docs/architecture.md."""
