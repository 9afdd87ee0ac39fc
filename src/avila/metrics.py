"""Prometheus metrics, one registry per application instance (tests run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "avila_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "avila_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "avila_events", "Events by ingestion outcome", ["outcome"], registry=r
        )
        self.commit_events = Histogram(
            "avila_group_commit_events",
            "Events per group commit",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
            registry=r,
        )
        self.commit_requests = Histogram(
            "avila_group_commit_requests",
            "Requests sharing one group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.commit_latency = Histogram(
            "avila_group_commit_duration_seconds",
            "Store transaction time of one group commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pending_events = Gauge(
            "avila_ingest_pending_events", "Events waiting for the next group commit", registry=r
        )
        self.backlog_events = Gauge(
            "avila_ingest_backlog_events",
            "Acknowledged entries' events (telemetry: readings) not yet loaded into the store",
            registry=r,
        )
        self.backlog_bytes = Gauge(
            "avila_ingest_backlog_bytes",
            "Ingest log bytes not yet loaded into the store",
            registry=r,
        )
        self.backlog_age = Gauge(
            "avila_ingest_backlog_oldest_seconds",
            "Age of the oldest ingest log entry not yet loaded",
            registry=r,
        )
        self.quarantined = Gauge(
            "avila_ingest_quarantined_entries",
            "Ingest log entries the store refused for good, set aside in <log>/quarantine"
            " (docs/ingestion.md)",
            registry=r,
        )
        self.loader_rows_per_s = Gauge(
            "avila_ingest_loader_rows_per_second",
            "Rows per second of the ingest loader's recent transactions",
            registry=r,
        )
        self.loader_rows = Gauge(
            "avila_ingest_loaded_rows", "Rows loaded from the ingest log since start", registry=r
        )
        self.dedup_keys = Gauge(
            "avila_dedup_index_keys", "Event keys held for idempotency", registry=r
        )
        self.dedup_evicted = Gauge(
            "avila_dedup_evicted_early",
            "Keys dropped before the dedup window ended because the index was full",
            registry=r,
        )
        self.query_workers_busy = Gauge(
            "avila_query_workers_busy", "Analytics queries running in a query worker", registry=r
        )
        self.query_workers_waiting = Gauge(
            "avila_query_workers_waiting",
            "Analytics queries waiting for a free query worker",
            registry=r,
        )
        self.query_worker_exits = Gauge(
            "avila_query_worker_exits",
            "Query workers that died (e.g. out of memory) or were killed at the time limit since"
            " start; each was replaced",
            registry=r,
        )
        self.rate_limited = Counter(
            "avila_rate_limited_requests", "Requests refused by the rate limiter", registry=r
        )
        self.mqtt_dropped = Counter(
            "avila_mqtt_messages_dropped",
            "MQTT messages dropped whole (acknowledged, nothing stored) by the bridge, by reason:"
            " malformed (unreadable payload or topic), batch_limit_exceeded (past 10,000"
            " readings)",
            ["reason"],
            registry=r,
        )
