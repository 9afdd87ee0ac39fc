"""Ingestion: validation at the edge, idempotency, and the group-commit writer."""
