"""Helpers for tests and benchmarks that drive a real server process."""

from avila.testing.server import ServerProcess, free_port

__all__ = ["ServerProcess", "free_port"]
