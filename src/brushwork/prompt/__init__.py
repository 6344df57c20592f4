"""prompt floor; see docs/architecture.md."""
