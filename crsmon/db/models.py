"""The tables. Clinical records are append-only events; grades and alerts are
derived rows guarded by unique natural keys, so re-running a grading task can
never write a row twice (reliability.md §1.4.1, §2.1).

Constraint names follow one naming convention, so Alembic can alter them on
SQLite (batch mode) and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is tz-aware UTC going in and coming out, on every backend.

    SQLite keeps no time zone, so values are stored as UTC and read back as UTC;
    a naive datetime is refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    # SQLAlchemy's TypeDecorator interface passes the dialect; UTC needs none.
    def process_bind_param(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002
    ) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: crsmon stores tz-aware UTC only")
        return value.astimezone(UTC)

    def process_result_value(
        self,
        value: Any,
        dialect: Dialect,  # noqa: ARG002
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    """Declarative base with the naming convention and UTC-aware timestamps."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # SQLAlchemy reads this class attribute by name; it is never mutated.
    type_annotation_map = {  # noqa: RUF012
        datetime: UtcDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Patient(Base):
    """An enrolled patient, known by a pseudonym only."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    birth_date: Mapped[date | None]
    age_years_at_infusion: Mapped[float | None]
    weight_kg: Mapped[float | None]
    disease_status: Mapped[str | None] = mapped_column(String(40))
    marrow_blast_pct: Mapped[float | None]
    ldh_u_l: Mapped[float | None]
    product_name: Mapped[str | None] = mapped_column(String(120))
    dose_cells_per_kg: Mapped[float | None]
    viability_pct: Mapped[float | None]
    infusion_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())
    scope_unit: Mapped[str | None] = mapped_column(String(64), index=True)
    """The care unit that owns the patient for access control: the unit of the
    latest unit stay (open, or the last one before discharge). Derived from the
    unit stays and rewritten with them; every API query is scoped by it."""


class UnitStay(Base):
    """Where a patient is cared for, from admission or transfer until it ends."""

    __tablename__ = "unit_stays"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    care_unit: Mapped[str] = mapped_column(String(64))
    from_at: Mapped[datetime]
    to_at: Mapped[datetime | None]


class ClinicalRecord(Base):
    """One bedside record as received (append-only; corrections are new rows).

    ``kind`` names the record type; ``occurred_at`` is when it was observed,
    given or started; ``details`` keeps the typed fields of the kind. A grading
    state travels with it: the row *is* the outbox (reliability.md §1.4.2).
    """

    __tablename__ = "clinical_records"
    __table_args__ = (
        UniqueConstraint("source_system", "source_record_id"),
        Index("ix_clinical_records_pending", "grading_state", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    source_system: Mapped[str] = mapped_column(String(64))
    source_record_id: Mapped[str] = mapped_column(String(128))
    content_hash: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime]
    quantity: Mapped[str | None] = mapped_column(String(40))
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(24))
    loinc: Mapped[str | None] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    quality_flags: Mapped[list[Any]] = mapped_column(default=list)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("clinical_records.id"))
    retracted_at: Mapped[datetime | None]
    retraction_reason: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())
    grading_state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    graded_at: Mapped[datetime | None] = mapped_column(index=True)
    """When a grading run took the record in (database clock, like recorded_at)."""
    lease_token: Mapped[str | None] = mapped_column(String(64))
    """The delivery (Celery task id) whose claim counted the latest attempt."""
    lease_until: Mapped[datetime | None]
    """Until then that delivery is live: another delivery counts no attempt on
    the record (it only waits for the patient's lock), so concurrent deliveries
    never use up the attempt budget; a redelivery of the same message (a killed
    worker) counts, so a poison record is still given up."""


class Grade(Base):
    """The ASTCT grade of a patient at one time, with the snapshot it came from.

    Append-only: a re-derivation at a time is a new row, and the newest row
    (highest id) at a time is the current grade. ``revision`` counts the rows
    written before it at that time (patient and rule set), so a snapshot that
    returns to an earlier one (A, B, A again) can be written again as the
    newest row.
    """

    __tablename__ = "grades"
    __table_args__ = (
        UniqueConstraint(
            "patient_id", "evaluated_at", "rule_set", "snapshot_hash", "revision"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    evaluated_at: Mapped[datetime]
    t_hours: Mapped[float]
    rule_set: Mapped[str] = mapped_column(String(200))
    rule_set_version: Mapped[str] = mapped_column(String(16))
    grade: Mapped[int]
    reasons: Mapped[list[Any]]
    missing_inputs: Mapped[list[Any]]
    flags: Mapped[list[Any]]
    snapshot: Mapped[dict[str, Any]]
    snapshot_hash: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(server_default=text("0"))
    """How many rows were written before this one at this time, patient and
    rule set (0 for the first; rows from before revisions existed are 0)."""
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())
    risk_probability: Mapped[float | None] = mapped_column(Float)
    """P(grade >= 3 within the model's horizon) at this time; None: not scored
    (no model, or the grade is already >= 3). Never changes ``grade``."""
    risk_model: Mapped[str | None] = mapped_column(String(80))
    risk_features: Mapped[list[Any] | None]
    """The features that moved the score most: feature, value, contribution."""


class Alert(Base):
    """An alert raised once per condition (unique dedup key per patient and kind)."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("patient_id", "kind", "dedup_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(16))
    dedup_key: Mapped[str] = mapped_column(String(200))
    triggered_at: Mapped[datetime]
    grade: Mapped[int | None]
    rule_set: Mapped[str] = mapped_column(String(200))
    reasons: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(16), default="open")
    raised_at: Mapped[datetime] = mapped_column(server_default=func.now())
    acknowledged_by: Mapped[str | None] = mapped_column(String(120))
    acknowledged_at: Mapped[datetime | None]
    acknowledgement_note: Mapped[str | None] = mapped_column(Text)


class QuarantinedRecord(Base):
    """A refused record, kept with its reason for review: nothing sent is lost."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    source_system: Mapped[str | None] = mapped_column(String(64))
    source_record_id: Mapped[str | None] = mapped_column(String(128))
    line_no: Mapped[int | None]
    error: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WebhookDelivery(Base):
    """One push of one alert to one webhook URL: an outbox row and its history.

    Written in the transaction that raises the alert, so a push cannot be lost
    between the alert and the HTTP call; the deliverer claims due rows, posts,
    and records each attempt (reliability.md §1.4.2). ``status`` is
    ``pending`` (waiting for ``next_attempt_at``), ``delivered`` or ``failed``
    (out of attempts: visible, never silently dropped).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "url"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    url: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Adjudication(Base):
    """A reviewer's verdict on a patient's computed maximum CRS grade.

    Append-only: a new verdict is a new row and the latest (highest id) counts;
    the grade rows it refers to are never changed. ``confirm`` keeps the
    computed maximum (``adjudicated_grade == computed_grade``); ``override``
    replaces it, for analysis, with a different grade. ``computed_grade`` and
    ``computed_grade_id`` (the peak grade row) record what the reviewer saw, so
    a later regrade that moves the maximum shows the verdict is stale.
    """

    __tablename__ = "adjudications"
    __table_args__ = (
        CheckConstraint("decision IN ('confirm', 'override')", name="decision"),
        CheckConstraint("adjudicated_grade BETWEEN 0 AND 5", name="adjudicated_grade"),
        CheckConstraint("computed_grade BETWEEN 0 AND 5", name="computed_grade"),
        CheckConstraint(
            "decision = 'override' OR adjudicated_grade = computed_grade",
            name="confirm_keeps_grade",
        ),
        CheckConstraint(
            "decision = 'confirm' OR adjudicated_grade <> computed_grade",
            name="override_changes_grade",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    adjudicated_grade: Mapped[int]
    computed_grade: Mapped[int]
    """The computed maximum grade when the verdict was given."""
    computed_grade_id: Mapped[int] = mapped_column(ForeignKey("grades.id"))
    """The grade row that first reached that maximum."""
    rule_set: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(500))
    adjudicated_by: Mapped[str] = mapped_column(String(120))
    adjudicated_at: Mapped[datetime]
    """Server UTC time of the verdict."""


ROLES = ("bedside", "reviewer", "analyst", "admin")
"""The API roles (docs/security.md has what each may do)."""


class ApiKey(Base):
    """A bearer API key: its public id, the hash of its secret, role and units.

    The secret is shown once at creation and never stored: only its keyed
    SHA-256 (``secret_hash``). A key is revoked by setting ``revoked_at``
    (never deleted, so the audit trail's actors stay resolvable).
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            "role IN ('bedside', 'reviewer', 'analyst', 'admin')", name="role"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(String(24), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(120))
    """Who holds it: a person (reviewers, analysts, admins) or a device/feed."""
    role: Mapped[str] = mapped_column(String(16))
    units: Mapped[list[Any]]
    """Care units it may act for; ``["*"]``: every unit."""
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(120))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(120))
    revoke_reason: Mapped[str | None] = mapped_column(String(500))


class AuditEvent(Base):
    """One audited write: who, what, when (server UTC) and why; append-only.

    Events form hash chains: one per patient (``patient:<id>``), one for
    administrative events (``admin``), one for security denials
    (``security``) and one for refused input (``quarantine``). ``seq`` numbers
    a chain's events from 1 and ``hash`` is SHA-256 over the event's canonical
    content and ``prev_hash``, so a changed, removed or inserted row breaks the
    chain (``crsmon audit verify``). The database refuses UPDATE and DELETE on
    this table (triggers on SQLite and PostgreSQL; grants on PostgreSQL).
    """

    __tablename__ = "audit_events"
    __table_args__ = (UniqueConstraint("chain", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    chain: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int]
    occurred_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(120))
    """``key:<key_id>`` (its holder's name is in api_keys), ``local:<os user>``
    for the command line, or ``system``."""
    actor_role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(200))
    patient_id: Mapped[int | None] = mapped_column(index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]]
    request_id: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class PatientLink(Base):
    """A site's reference to a patient (a FHIR ``Patient/...`` reference, a
    FHIR identifier or an HL7 v2 PID-3 id) mapped to the crsmon patient.

    Only the keyed SHA-256 of the site's reference is stored (``ref_hash``,
    with the same pepper as the API keys): the database never holds a medical
    record number, and a link is found by hashing what a message carries.
    """

    __tablename__ = "patient_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref_hash: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``reference`` (FHIR ``Patient/<id>``) or ``identifier`` (system|value)."""
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(120))


class InboundItem(Base):
    """One resource (FHIR) or one observation group (HL7 v2) as it arrived, and
    what became of it: the standard feeds' own record of receipt.

    Nothing sent is dropped: an item is kept whether its values became feed
    records (``graded``), were kept without grading (``not_graded``: a
    preliminary status, a date-only time, a code crsmon does not use), were
    refused (``refused``, with reasons), or retracted an earlier item
    (``retraction``). ``identity`` is the sender's id for the resource
    (identifier, else logical id), so a later amended or entered-in-error
    version finds the records of the one it replaces (``record_keys``).
    """

    __tablename__ = "inbound_items"
    __table_args__ = (
        Index("ix_inbound_items_identity", "channel", "identity"),
        CheckConstraint(
            "disposition IN ('graded', 'not_graded', 'refused', 'retraction')",
            name="disposition",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    """``fhir`` or ``hl7v2``."""
    resource_type: Mapped[str] = mapped_column(String(40))
    identity: Mapped[str | None] = mapped_column(String(300))
    content_hash: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[int | None] = mapped_column(
        ForeignKey("patients.id"), index=True
    )
    status: Mapped[str | None] = mapped_column(String(32))
    """The sender's status (FHIR ``status``, HL7 OBX-11)."""
    disposition: Mapped[str] = mapped_column(String(16))
    notes: Mapped[list[Any]]
    """What the reader should know: each ``{"code", "element", "text"}``."""
    record_keys: Mapped[list[Any]]
    """The feed records made from it: ``[source_system, source_record_id]``."""
    values: Mapped[dict[str, Any]]
    """The values read, in canonical units (also when not graded)."""
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
