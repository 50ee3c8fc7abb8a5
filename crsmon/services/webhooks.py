"""Signed webhook pushes of severe alerts, sent from an outbox and retried.

A reviewer may not be looking at a screen when a patient reaches grade 3, so
alerts of a push kind (``severe_crs``, ``crs_death``, ``high_risk``) are also
POSTed to every configured URL. The grading transaction that raises such an
alert writes one :class:`~crsmon.db.models.WebhookDelivery` row per URL (the
outbox), so a push is never lost between the alert and the HTTP call.
:func:`deliver_due` then sends what is due:

1. **Claim** one due row (short transaction): count the attempt and lease it
   (``next_attempt_at`` moved well past the request timeout), so a second
   deliverer skips it and a deliverer that dies mid-request leaves it to be
   retried when the lease ends. On PostgreSQL the claim skips a row another
   deliverer has locked.
2. **Post**, outside any transaction, with a timeout.
3. **Record**, only if the row is still ours (pending, same attempt count): a
   2xx marks it ``delivered``; anything else records the status code or error
   and schedules the next attempt after an exponential backoff
   (``backoff_s * 2**(attempts-1)``, capped), until ``max_attempts`` marks it
   ``failed`` (kept, visible in the API and the metrics). Then the next row.

Delivery is at least once: a receiver deduplicates on ``X-Crsmon-Delivery``.

**Signature.** ``X-Crsmon-Signature: t=<unix seconds>,v1=<hex>`` where ``hex``
is HMAC-SHA256, keyed with ``CRSMON_WEBHOOK_SECRET``, of ``"<t>." + body``
(the raw body bytes). A receiver recomputes it, compares in constant time and
refuses a stale ``t`` (:func:`verify_signature` does both). The body holds the
alert and the patient's pseudonym only, never a clinical identifier.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from crsmon import __version__
from crsmon.db.models import Alert, Patient, WebhookDelivery
from crsmon.settings import Settings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Crsmon-Signature"
DELIVERY_HEADER = "X-Crsmon-Delivery"
EVENT_HEADER = "X-Crsmon-Event"
NOTICE = "crsmon is research software for monitoring and analysis, not a medical device"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
MAX_ERROR_CHARS = 300

Post = Callable[[str, bytes, dict[str, str]], int]
"""Send one body to one URL with headers; return the HTTP status code."""


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """Where and how severe alerts are pushed (the ``CRSMON_WEBHOOK_*`` settings)."""

    urls: tuple[str, ...]
    secret: bytes = field(repr=False)
    timeout_s: float = 5.0
    max_attempts: int = 10
    backoff_s: float = 10.0
    backoff_max_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy | None:
        """The policy, or None when no webhook is configured."""
        if not settings.webhook_urls or settings.webhook_secret is None:
            return None
        return cls(
            urls=tuple(settings.webhook_urls),
            secret=settings.webhook_secret.get_secret_value().encode(),
            timeout_s=settings.webhook_timeout_s,
            max_attempts=settings.webhook_max_attempts,
            backoff_s=settings.webhook_backoff_s,
            backoff_max_s=settings.webhook_backoff_max_s,
        )

    def backoff(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt: doubling, capped."""
        seconds = self.backoff_s * 2.0 ** min(attempts - 1, 30)
        return timedelta(seconds=min(seconds, self.backoff_max_s))


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Crsmon-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: bytes, header: str, body: bytes, *, now: int, tolerance_s: int = 300
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_s``."""
    parts = dict(p.partition("=")[::2] for p in header.split(","))
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2].encode()
    given = parts.get("v1", "").encode("utf-8", "replace")
    fresh = abs(now - timestamp) <= tolerance_s
    return fresh and hmac.compare_digest(expected, given)


def alert_body(alert: Alert, patient: Patient, delivery_id: int) -> bytes:
    """The JSON body of one push (canonical: sorted keys, no spaces)."""
    content: dict[str, Any] = {
        "event": "alert.raised",
        "delivery_id": delivery_id,
        "notice": NOTICE,
        "crsmon_version": __version__,
        "patient": patient.pseudonym,
        "alert": {
            "id": alert.id,
            "kind": alert.kind,
            "severity": alert.severity,
            "grade": alert.grade,
            "rule_set": alert.rule_set,
            "dedup_key": alert.dedup_key,
            "triggered_at": alert.triggered_at.isoformat(),
            "reasons": alert.reasons,
            "status": alert.status,
            "href": f"/v1/alerts/{alert.id}",
        },
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class _Claimed:
    delivery_id: int
    url: str
    attempts: int
    kind: str
    body: bytes


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one :func:`deliver_due` call did."""

    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


def httpx_post(timeout_s: float) -> Post:
    """A :data:`Post` over httpx, no redirects followed, bounded by ``timeout_s``."""

    def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
        return response.status_code

    return post


def _claim_one(
    sessions: sessionmaker[Session], policy: WebhookPolicy, now: datetime
) -> _Claimed | None:
    """Count an attempt on the next due delivery and lease it; None if none is due.

    One row at a time, leased from the moment it is sent, so a slow receiver
    never lets the lease of a row still waiting in a batch run out.
    """
    lease = now + timedelta(seconds=4 * policy.timeout_s + 30)
    with sessions.begin() as session:
        delivery = session.scalars(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at <= now,
                WebhookDelivery.attempts < policy.max_attempts,
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if delivery is None:
            return None
        alert = session.get_one(Alert, delivery.alert_id)
        patient = session.get_one(Patient, alert.patient_id)
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.next_attempt_at = lease
        body = alert_body(alert, patient, delivery.id)
        return _Claimed(delivery.id, delivery.url, delivery.attempts, alert.kind, body)


def _send(
    item: _Claimed, policy: WebhookPolicy, post: Post, now: datetime
) -> tuple[int | None, str]:
    """POST one claimed delivery: the status code, and '' or what went wrong."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"crsmon/{__version__}",
        SIGNATURE_HEADER: sign(policy.secret, int(now.timestamp()), item.body),
        DELIVERY_HEADER: str(item.delivery_id),
        EVENT_HEADER: f"alert.{item.kind}",
    }
    try:
        status = post(item.url, item.body, headers)
    except Exception as exc:  # any transport failure is one failed attempt
        # The URL may hold a token: never store it in the error text.
        text = f"{type(exc).__name__}: {exc}".replace(item.url, "<url>")
        return None, text[:MAX_ERROR_CHARS]
    return status, "" if 200 <= status < 300 else f"HTTP {status}"


def _record(
    sessions: sessionmaker[Session],
    policy: WebhookPolicy,
    item: _Claimed,
    outcome: tuple[int | None, str],
    done_at: datetime,
) -> str:
    """Store one attempt's outcome, unless another deliverer has moved on since.

    Returns the row's new status ('' when the row was no longer ours).
    """
    status_code, error = outcome
    with sessions.begin() as session:
        delivery = session.get_one(WebhookDelivery, item.delivery_id)
        if delivery.status != PENDING or delivery.attempts != item.attempts:
            return ""  # our lease ran out and a later attempt owns the row
        delivery.last_status_code = status_code
        if not error:
            delivery.status, delivery.delivered_at = DELIVERED, done_at
            delivery.last_error = None
        elif item.attempts >= policy.max_attempts:
            delivery.status, delivery.last_error = FAILED, error
            logger.warning(
                "webhook delivery %d failed for good after %d attempts",
                item.delivery_id,
                item.attempts,
            )
        else:
            delivery.last_error = error
            delivery.next_attempt_at = done_at + policy.backoff(item.attempts)
        return delivery.status


def _give_up_lost_last_attempts(
    sessions: sessionmaker[Session], policy: WebhookPolicy, now: datetime
) -> None:
    """Rows whose last allowed attempt never reported back (lease over): failed."""
    with sessions.begin() as session:
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.status == PENDING,
                WebhookDelivery.attempts >= policy.max_attempts,
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(
                status=FAILED,
                last_error="gave up: the last attempt never reported back",
            )
        )


def deliver_due(
    sessions: sessionmaker[Session],
    policy: WebhookPolicy,
    *,
    clock: Callable[[], datetime],
    post: Post | None = None,
    limit: int = 100,
) -> DeliveryReport:
    """Send due deliveries one by one (at most ``limit``); record each attempt."""
    send = post or httpx_post(policy.timeout_s)
    _give_up_lost_last_attempts(sessions, policy, clock())
    counts = {DELIVERED: 0, PENDING: 0, FAILED: 0, "": 0}
    attempted = 0
    while attempted < limit:
        item = _claim_one(sessions, policy, clock())
        if item is None:
            break
        attempted += 1
        outcome = _send(item, policy, send, clock())
        counts[_record(sessions, policy, item, outcome, clock())] += 1
    return DeliveryReport(attempted, counts[DELIVERED], counts[PENDING], counts[FAILED])
