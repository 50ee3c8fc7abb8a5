"""Prometheus metrics of one app: its own registry, never the global one.

Gauges are read from the database at scrape time (so every API process and
worker reports the same truth); counters and the dispatch histogram count what
this process did. When the database does not answer, the scrape still succeeds
and says so (``crsmon_database_up 0``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.queries import LAG_WINDOW, metrics_snapshot
from crsmon.domain.alerts import AlertKind

logger = logging.getLogger(__name__)

STATUSES = ("stored", "duplicate", "refused", "conflict")
GRADING_STATES = ("pending", "graded", "failed")
DELIVERY_STATUSES = ("pending", "delivered", "failed")


@dataclass(frozen=True, slots=True)
class AppMetrics:
    """The registry /metrics exposes and the instruments the API updates."""

    registry: CollectorRegistry
    intake: Counter
    dispatch_seconds: Histogram
    dispatch_failures: Counter


def app_metrics(sessions: sessionmaker[Session]) -> AppMetrics:
    """A fresh registry with the database collector and the API's instruments."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(sessions))
    intake = Counter(
        "crsmon_api_intake_records",
        "Feed records received over HTTP, by outcome.",
        ["status"],
        registry=registry,
    )
    for status in STATUSES:
        intake.labels(status=status)
    dispatch = Histogram(
        "crsmon_api_dispatch_seconds",
        "Time to hand newly stored records to the grader after commit "
        "(in process: the grading itself).",
        registry=registry,
    )
    failures = Counter(
        "crsmon_api_dispatch_failures",
        "Grading notifications that failed (the records stay pending).",
        registry=registry,
    )
    return AppMetrics(registry, intake, dispatch, failures)


class DatabaseCollector(Collector):
    """Gauges computed from the tables at each scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Records by grading state, oldest pending age, open alerts, quarantine."""
        up = GaugeMetricFamily(
            "crsmon_database_up", "Whether the database answered this scrape."
        )
        try:
            with self.sessions() as session:
                snap = metrics_snapshot(session, datetime.now(UTC))
        except SQLAlchemyError:
            logger.exception("metrics: the database did not answer")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        records = GaugeMetricFamily(
            "crsmon_records",
            "Stored clinical records by grading state.",
            labels=["grading_state"],
        )
        states = dict.fromkeys(GRADING_STATES, 0) | snap.records_by_state
        for state, n in sorted(states.items()):
            records.add_metric([state], n)
        yield records
        age = 0.0
        if snap.oldest_pending_at is not None:
            age = (datetime.now(UTC) - snap.oldest_pending_at).total_seconds()
        yield GaugeMetricFamily(
            "crsmon_oldest_pending_record_age_seconds",
            "Age of the oldest record still waiting to be graded (the grading "
            "lag; 0 when nothing is pending).",
            value=max(age, 0.0),
        )
        alerts = GaugeMetricFamily(
            "crsmon_open_alerts",
            "Open (unacknowledged) alerts by kind.",
            labels=["kind"],
        )
        kinds = dict.fromkeys((str(k) for k in AlertKind), 0) | snap.open_alerts_by_kind
        for kind, n in sorted(kinds.items()):
            alerts.add_metric([kind], n)
        yield alerts
        yield GaugeMetricFamily(
            "crsmon_quarantined_records",
            "Refused records kept in quarantine for review.",
            value=snap.quarantined,
        )
        yield from _lag_metrics(snap.grading_lags_s)
        deliveries = GaugeMetricFamily(
            "crsmon_webhook_deliveries",
            "Webhook pushes of severe alerts by status (failed: out of attempts).",
            labels=["status"],
        )
        statuses = dict.fromkeys(DELIVERY_STATUSES, 0) | snap.deliveries_by_status
        for status, n in sorted(statuses.items()):
            deliveries.add_metric([status], n)
        yield deliveries


def _lag_metrics(lags: list[float]) -> Iterator[GaugeMetricFamily]:
    """Grading lag (storage to grading) of the records graded in the last window."""
    window = int(LAG_WINDOW.total_seconds())
    yield GaugeMetricFamily(
        "crsmon_records_graded_recently",
        f"Records graded in the last {window} s.",
        value=len(lags),
    )
    lag = GaugeMetricFamily(
        "crsmon_grading_lag_seconds",
        f"Seconds from storing a record to grading it, over the records graded in "
        f"the last {window} s (mean, p95, max; 0 when none).",
        labels=["stat"],
    )
    ordered = sorted(lags)
    stats = {"mean": 0.0, "p95": 0.0, "max": 0.0}
    if ordered:
        p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        stats = {"mean": sum(ordered) / len(ordered), "p95": p95, "max": ordered[-1]}
    for stat, value in stats.items():
        lag.add_metric([stat], value)
    yield lag
