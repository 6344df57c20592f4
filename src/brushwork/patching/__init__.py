"""patching floor; see docs/architecture.md."""
