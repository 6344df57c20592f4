"""conditioning floor; see docs/architecture.md."""
