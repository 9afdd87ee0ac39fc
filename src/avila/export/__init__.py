"""Exports (CSV, JSON, NDJSON, Parquet) streamed from the store, and file imports."""
