"""Deterministic synthetic data for demos, tests and benchmarks."""
