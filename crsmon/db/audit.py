"""The audit trail: append-only, hash-chained events, written with their change.

Every write that people or feeds cause (records, corrections, retractions,
attributions, acknowledgements, adjudications, key changes, exports, refused
input and access denials) appends one :class:`~crsmon.db.models.AuditEvent` in
the same transaction as the change it describes, so neither can exist without
the other (reliability.md §2.3).

Chains. Each patient has its own chain (``patient:<id>``); administrative
events share ``admin``, denials ``security`` and refused input ``quarantine``.
Writers for different patients therefore never wait for each other: appending
takes the chain's head under a lock held to commit (a transaction advisory
lock on PostgreSQL; SQLite's single writer, ``BEGIN IMMEDIATE``, already
serializes), and ``(chain, seq)`` is unique as the last line of defence.

Hash. ``hash = SHA-256(canonical JSON of the event's content + prev_hash)``;
the first event of a chain has ``prev_hash`` = 64 zeros. :func:`verify`
recomputes every chain: a changed field, a removed or inserted event, or a
reordered one shows as a break at that chain and sequence number.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from crsmon.db.models import AuditEvent

GENESIS = "0" * 64
"""``prev_hash`` of a chain's first event."""
ADMIN = "admin"
SECURITY = "security"
QUARANTINE = "quarantine"


def patient_chain(patient_id: int) -> str:
    """The chain of one patient's events."""
    return f"patient:{patient_id}"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: ``key:<key_id>``, ``local:<os user>`` or ``system``."""

    id: str
    role: str
    request_id: str | None = None


SYSTEM = Actor("system", "system")
"""crsmon itself (migrations, sweeps)."""


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes an event's hash covers (sorted keys, no spaces, UTF-8)."""
    return json.dumps(
        event, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def _content(row: AuditEvent) -> dict[str, Any]:
    return {
        "chain": row.chain,
        "seq": row.seq,
        "occurred_at": row.occurred_at.isoformat(timespec="microseconds"),
        "actor": row.actor,
        "actor_role": row.actor_role,
        "action": row.action,
        "entity": row.entity,
        "entity_id": row.entity_id,
        "patient_id": row.patient_id,
        "reason": row.reason,
        "details": row.details,
        "request_id": row.request_id,
        "prev_hash": row.prev_hash,
    }


def event_hash(row: AuditEvent) -> str:
    """The hash an event must carry, from its content and ``prev_hash``."""
    return hashlib.sha256(canonical(_content(row))).hexdigest()


def _chain_lock(session: Session, chain: str) -> None:
    """Hold the chain's head until commit (PostgreSQL; SQLite is serialized)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(
        hashlib.sha256(chain.encode()).digest()[:8], "big", signed=True
    )
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def record_event(
    session: Session,
    *,
    chain: str,
    actor: Actor,
    action: str,
    entity: str,
    now: datetime,
    entity_id: str | int | None = None,
    patient_id: int | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to ``chain`` in the session's transaction.

    ``details`` must be JSON-native (strings, ints, lists, dicts): it is hashed
    as written and re-hashed as read back.
    """
    _chain_lock(session, chain)
    head = session.execute(
        select(AuditEvent.seq, AuditEvent.hash)
        .where(AuditEvent.chain == chain)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).one_or_none()
    seq, prev = (1, GENESIS) if head is None else (head[0] + 1, head[1])
    row = AuditEvent(
        chain=chain,
        seq=seq,
        occurred_at=now.astimezone(UTC),
        actor=actor.id,
        actor_role=actor.role,
        action=action,
        entity=entity,
        entity_id=None if entity_id is None else str(entity_id),
        patient_id=patient_id,
        reason=reason,
        details=details or {},
        request_id=actor.request_id,
        prev_hash=prev,
    )
    row.hash = event_hash(row)
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event for :func:`record_events` (the actor and time are shared)."""

    chain: str
    action: str
    entity: str
    entity_id: str | int | None = None
    patient_id: int | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def record_events(
    session: Session, specs: list[EventSpec], *, actor: Actor, now: datetime
) -> int:
    """Append many events in the session's transaction, in a few statements:
    the chains' locks in sorted order (no two writers deadlock), their heads
    in one query, the events in one insert. The same chain, hashes and
    sequence numbers as :func:`record_event` one at a time.
    """
    if not specs:
        return 0
    chains = sorted({s.chain for s in specs})
    if session.get_bind().dialect.name == "postgresql":
        keys = [
            int.from_bytes(hashlib.sha256(c.encode()).digest()[:8], "big", signed=True)
            for c in chains
        ]
        session.execute(
            text(
                "SELECT pg_advisory_xact_lock(k) FROM "
                "(SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) s"
            ),
            {"keys": sorted(keys)},
        )
    heads: dict[str, tuple[int, str]] = {}
    for start in range(0, len(chains), 500):
        part = chains[start : start + 500]
        top = (
            select(AuditEvent.chain, func.max(AuditEvent.seq).label("seq"))
            .where(AuditEvent.chain.in_(part))
            .group_by(AuditEvent.chain)
            .subquery()
        )
        for chain, seq, digest in session.execute(
            select(AuditEvent.chain, AuditEvent.seq, AuditEvent.hash).join(
                top, (AuditEvent.chain == top.c.chain) & (AuditEvent.seq == top.c.seq)
            )
        ):
            heads[chain] = (seq, digest)
    rows = []
    for spec in specs:
        seq, prev = heads.get(spec.chain, (0, GENESIS))
        row = AuditEvent(
            chain=spec.chain,
            seq=seq + 1,
            occurred_at=now.astimezone(UTC),
            actor=actor.id,
            actor_role=actor.role,
            action=spec.action,
            entity=spec.entity,
            entity_id=None if spec.entity_id is None else str(spec.entity_id),
            patient_id=spec.patient_id,
            reason=spec.reason,
            details=spec.details,
            request_id=actor.request_id,
            prev_hash=prev,
        )
        row.hash = event_hash(row)
        heads[spec.chain] = (seq + 1, row.hash)
        rows.append(row)
    columns = [c.key for c in AuditEvent.__table__.columns if c.key != "id"]
    session.execute(
        insert(AuditEvent), [{c: getattr(r, c) for c in columns} for r in rows]
    )
    return len(rows)


@dataclass(frozen=True, slots=True)
class Break:
    """Where a chain stops verifying, and why."""

    chain: str
    seq: int
    problem: str


@dataclass(slots=True)
class Verification:
    """The verifier's result: chains and events checked, each chain's head, breaks."""

    chains: int = 0
    events: int = 0
    heads: dict[str, str] = field(default_factory=dict)
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every chain verified."""
        return not self.breaks


def _rows(session: Session, chain: str | None) -> Iterator[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.chain, AuditEvent.seq)
    if chain is not None:
        query = query.where(AuditEvent.chain == chain)
    yield from session.scalars(query.execution_options(yield_per=2000))


def verify(session: Session, chain: str | None = None) -> Verification:
    """Recompute every chain (or one): hashes, links and sequence numbers."""
    result = Verification()
    current: str | None = None
    expected_seq, prev = 1, GENESIS
    broken: set[str] = set()
    for row in _rows(session, chain):
        if row.chain != current:
            current, expected_seq, prev = row.chain, 1, GENESIS
            result.chains += 1
        result.events += 1
        if row.chain not in broken:
            problem = None
            if row.seq != expected_seq:
                problem = f"sequence jumps from {expected_seq - 1} to {row.seq}"
            elif row.prev_hash != prev:
                problem = "prev_hash does not match the previous event"
            elif row.hash != event_hash(row):
                problem = "content does not match its hash (altered)"
            if problem is not None:
                result.breaks.append(Break(row.chain, row.seq, problem))
                broken.add(row.chain)
        expected_seq, prev = row.seq + 1, row.hash
        result.heads[row.chain] = row.hash
    return result


def chain_count(session: Session) -> int:
    """How many chains hold events."""
    return session.scalar(select(func.count(func.distinct(AuditEvent.chain)))) or 0


def events(
    session: Session,
    *,
    chain: str | None = None,
    patient_id: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEvent]:
    """Events, oldest first, of one chain or one patient."""
    query = select(AuditEvent).order_by(AuditEvent.chain, AuditEvent.seq)
    if chain is not None:
        query = query.where(AuditEvent.chain == chain)
    if patient_id is not None:
        query = query.where(AuditEvent.patient_id == patient_id)
    return list(session.scalars(query.limit(limit).offset(offset)))
