"""API keys in the database: create (shown once), list, revoke, authenticate.

Every change is audited on the ``admin`` chain in the same transaction. The
secret is never stored or logged; only its keyed hash (:mod:`crsmon.auth.keys`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from crsmon.auth.keys import generate, matches, parse, secret_hash
from crsmon.auth.policy import ROLES
from crsmon.db.audit import ADMIN, Actor, record_event
from crsmon.db.models import ApiKey

ALL_UNITS = "*"
"""The unit list entry meaning every care unit."""
MAX_NAME = 120


class KeyRefusal(ValueError):
    """A key request that cannot be honoured (names the field and why)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    key_id: str
    name: str
    role: str
    units: tuple[str, ...]
    """Its care units; ``("*",)``: every unit."""

    @property
    def all_units(self) -> bool:
        """Whether the key covers every unit."""
        return ALL_UNITS in self.units

    def actor(self, request_id: str | None = None) -> Actor:
        """This caller as the audit trail names it (the key id, never a secret)."""
        return Actor(f"key:{self.key_id}", self.role, request_id)


Failure = Literal[
    "missing", "malformed", "unknown", "wrong secret", "expired", "revoked"
]


def _units(role: str, units: list[str]) -> list[str]:
    cleaned = sorted({u.strip() for u in units})
    if any(not u or len(u) > 64 for u in cleaned):
        raise KeyRefusal("units", "each unit is 1 to 64 characters")
    if role in ("analyst", "admin"):
        # Study-wide roles: analysts read pseudonymous research tables only;
        # admins read no clinical data at all.
        return [ALL_UNITS]
    if not cleaned:
        raise KeyRefusal("units", f"a {role} key needs at least one unit (or '*')")
    return [ALL_UNITS] if ALL_UNITS in cleaned else cleaned


def create_key(
    session: Session,
    *,
    name: str,
    role: str,
    units: list[str],
    expires_at: datetime | None,
    actor: Actor,
    now: datetime,
    pepper: str,
) -> tuple[ApiKey, str]:
    """A new key row and the key's full text (to show once).

    Raises:
        KeyRefusal: unknown role, bad units, empty name, expiry in the past.
    """
    if role not in ROLES:
        raise KeyRefusal("role", f"must be one of {', '.join(ROLES)}")
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise KeyRefusal("name", f"1 to {MAX_NAME} characters")
    if expires_at is not None and expires_at <= now:
        raise KeyRefusal("expires_at", "must be in the future")
    new = generate()
    row = ApiKey(
        key_id=new.key_id,
        secret_hash=secret_hash(new.secret, pepper),
        name=name,
        role=role,
        units=_units(role, units),
        created_at=now,
        created_by=actor.id,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    record_event(
        session,
        chain=ADMIN,
        actor=actor,
        action="create",
        entity="api_key",
        entity_id=row.key_id,
        now=now,
        reason="key created",
        details={
            "role": role,
            "units": row.units,
            "expires_at": None if expires_at is None else expires_at.isoformat(),
        },
    )
    return row, new.text


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, newest first (hashes are never shown)."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id.desc())))


def revoke_key(
    session: Session, key_id: str, *, reason: str, actor: Actor, now: datetime
) -> ApiKey:
    """Revoke a key from now on (idempotent: a revoked key stays revoked).

    Raises:
        KeyRefusal: no such key, or no reason given.
    """
    reason = reason.strip()
    if not reason:
        raise KeyRefusal("reason", "say why the key is revoked")
    row = session.scalars(
        select(ApiKey).where(ApiKey.key_id == key_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise KeyRefusal("key_id", "no such key")
    if row.revoked_at is None:
        row.revoked_at = now
        row.revoked_by = actor.id
        row.revoke_reason = reason[:500]
        record_event(
            session,
            chain=ADMIN,
            actor=actor,
            action="revoke",
            entity="api_key",
            entity_id=row.key_id,
            now=now,
            reason=reason[:500],
        )
    return row


def authenticate(
    session: Session, text: str | None, *, pepper: str, now: datetime
) -> Principal | Failure:
    """The caller a bearer key names, or why it is refused."""
    if not text:
        return "missing"
    parts = parse(text)
    if parts is None:
        return "malformed"
    key_id, secret = parts
    row = session.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).one_or_none()
    if row is None:
        # Spend the same hashing work as a real check (no timing oracle on ids).
        matches(secret, "0" * 64, pepper)
        return "unknown"
    if not matches(secret, row.secret_hash, pepper):
        return "wrong secret"
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return Principal(row.key_id, row.name, row.role, tuple(row.units))
