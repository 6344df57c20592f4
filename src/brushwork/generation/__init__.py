"""generation floor; see docs/architecture.md."""
