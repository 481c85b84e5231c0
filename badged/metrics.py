"""Prometheus metrics of the daemon, in a registry of their own (tests can make several)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconcile_total = Counter(
            "badged_reconcile", "Reconcile passes by result", ["result"], registry=r)
        self.reconcile_duration = Histogram(
            "badged_reconcile_duration_seconds", "Duration of reconcile passes", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.badges_desired = Gauge("badged_badges_desired", "Badges in the last valid badge.json", registry=r)
        self.changes_applied = Counter(
            "badged_changes_applied", "Plan steps applied", ["action", "kind"], registry=r)
        self.drift_repaired = Counter(
            "badged_drift_repaired", "Objects changed or dropped by hand and repaired", registry=r)
        self.source_errors = Counter(
            "badged_source_errors", "badge.json unreadable or invalid", ["reason"], registry=r)
        self.last_success = Gauge(
            "badged_last_success_timestamp_seconds", "When the last reconcile succeeded", registry=r)
        self.events_delivered = Counter(
            "badged_events_delivered", "badge-earned events delivered, by sink", ["sink"], registry=r)
        self.event_failures = Counter(
            "badged_event_failures", "Attempts to deliver a badge-earned event that failed and are retried, by sink",
            ["sink"], registry=r)
        self.events_parked = Counter(
            "badged_events_parked", "badge-earned events a sink refused for good, kept in parked_event, by sink",
            ["sink"], registry=r)
        self.delivery_lag = Histogram(
            "badged_event_delivery_lag_seconds", "From an award to its delivery (or parking) by a sink", ["sink"],
            registry=r, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600))
        self.rechecks = Counter(
            "badged_rechecks", "Deferred badge checks finished by the recheck drain, by result "
            "(busy ones are retried)", ["result"], registry=r)
        self.rechecks_pending = Gauge(
            "badged_rechecks_pending", "Deferred badge checks waiting in the recheck table (counted up to 10,000)",
            registry=r)
        self.recheck_oldest = Gauge(
            "badged_recheck_oldest_seconds", "Age of the oldest deferred badge check (0 when none)", registry=r)
        self.ready = Gauge("badged_ready", "1 when /readyz answers 200: the last reconcile succeeded, the source "
                           "was readable, no pass is stalled and no background task is dead", registry=r)
        self.task_failures = Counter(
            "badged_task_failures", "Background tasks of badged run that died with an exception, by task (each "
            "is started again with backoff; reconcile: a pass that failed unexpectedly)", ["task"], registry=r)
        self.task_up = Gauge("badged_task_up", "1 while a background task of badged run runs, 0 while it is dead",
                             ["task"], registry=r)
