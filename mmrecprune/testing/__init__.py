"""Attack tools for the loaders (used by tests/security and tools/benchmarks)."""
