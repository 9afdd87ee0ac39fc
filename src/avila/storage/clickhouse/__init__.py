"""ClickHouse backend: a server or cluster, or the embedded engine (chdb)."""
