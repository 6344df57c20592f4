"""Model factories shared by tests and benchmarks: tiny and full-size SD models with random weights."""
