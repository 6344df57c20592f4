"""modeltools floor; see docs/architecture.md."""
