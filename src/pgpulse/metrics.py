"""Prometheus metrics, one registry per app so that several apps can share a process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "pgpulse_connections", "Open event connections.", ["transport"], registry=self.registry
        )
        self.events_published = Counter(
            "pgpulse_events_published",
            "Events published through this server.",
            ["via"],
            registry=self.registry,
        )
        self.events_delivered = Counter(
            "pgpulse_events_delivered",
            "Events queued to connections (one per connection).",
            registry=self.registry,
        )
        self.slow_consumers = Counter(
            "pgpulse_slow_consumers",
            "Connections closed with 1013 for falling behind.",
            registry=self.registry,
        )
        self.listener_up = Gauge(
            "pgpulse_listener_connected",
            "1 while the LISTEN connection is up.",
            registry=self.registry,
        )
        self.listener_reconnects = Gauge(
            "pgpulse_listener_reconnects",
            "Times the LISTEN connection was re-established.",
            registry=self.registry,
        )
        self.jobs_submitted = Counter(
            "pgpulse_jobs_submitted",
            "Jobs submitted through POST /api/jobs.",
            registry=self.registry,
        )
        self.jobs = Gauge(
            "pgpulse_jobs",
            "Jobs queued or running, across every worker (read from the database at scrape).",
            ["status"],
            registry=self.registry,
        )
        self.jobs_oldest_queued_seconds = Gauge(
            "pgpulse_jobs_oldest_queued_seconds",
            "How long the oldest queued job has waited: workers are missing or too few.",
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "pgpulse_publish_seconds",
            "Time to store an HTTP publish durably.",
            registry=self.registry,
        )
