"""samplers floor; see docs/architecture.md."""
