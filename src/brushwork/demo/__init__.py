"""The shapes world of the built-in demo model: picture generator, kohya training folders, probe."""
