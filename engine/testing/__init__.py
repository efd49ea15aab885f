"""Tiny random checkpoints in the exact published format (tests, benchmarks, trying the CLI). Not used by production paths."""
