"""Embedded DuckDB backend (the default tier)."""
