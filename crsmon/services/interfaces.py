"""Standard-feed items in: find the patient, replace or retract earlier
versions, send the feed records through the one intake path, keep the item.

Thin over :mod:`crsmon.interfaces` (pure reading) and
:func:`crsmon.services.ingest.ingest_text` (validation, storage once,
quarantine). Every item is kept in ``inbound_items`` with what became of it,
whatever that was, and its receipt is audited on the patient's chain (or the
quarantine chain when no patient is known): nothing sent is lost.

Versions. A resource's feed key carries its identity and a hash of its
content. The same content again is a duplicate (nothing new is written). New
content under an identity already received (FHIR ``amended``/``corrected``,
an infusion now ``completed``, an OBX-11 ``C``) retracts the records of the
earlier version and stores the new ones; ``entered-in-error``/``cancelled``
(OBX-11 ``X`` is not a retraction: it means "cannot be obtained") retracts
them, and so the grades derived from them are recomputed.

Patients. A site's reference (FHIR ``Patient/<id>``, an identifier
``system|value``, an HL7 PID-3 id) is linked to a crsmon patient by an
administrator (``crsmon links add``); only the reference's keyed hash is
stored. A unit-scoped key only finds patients of its units.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.audit import QUARANTINE, Actor, patient_chain, record_event
from crsmon.db.models import ClinicalRecord, InboundItem, Patient, PatientLink
from crsmon.domain.state import StateSettings
from crsmon.domain.vocab import OxygenDevice
from crsmon.intake.parse import Refused, parse_record
from crsmon.interfaces import hl7v2
from crsmon.interfaces.readings import (
    Item,
    Note,
    content_digest,
    feed_records,
    record_key,
    retractions,
)
from crsmon.services.ingest import Outcome, ingest_text

LINK_KINDS = ("reference", "identifier")


def ref_hash(kind: str, ref: str, pepper: str) -> str:
    """The stored form of a site's patient reference (keyed SHA-256)."""
    return hmac.new(
        pepper.encode(), f"{kind}:{ref}".encode(), hashlib.sha256
    ).hexdigest()


class LinkError(ValueError):
    """A link that cannot be made (unknown patient, reference already linked)."""


def link_patient(
    session: Session,
    *,
    kind: str,
    ref: str,
    pseudonym: str,
    pepper: str,
    actor: Actor,
    now: datetime,
) -> PatientLink:
    """Link a site's reference to an enrolled patient (audited).

    Raises:
        LinkError: unknown kind or patient, or the reference is linked already.
    """
    if kind not in LINK_KINDS:
        raise LinkError(f"kind: one of {', '.join(LINK_KINDS)}")
    patient = session.scalar(select(Patient).where(Patient.pseudonym == pseudonym))
    if patient is None:
        raise LinkError("patient: not enrolled")
    digest = ref_hash(kind, ref, pepper)
    found = session.scalar(select(PatientLink).where(PatientLink.ref_hash == digest))
    if found is not None:
        if found.patient_id == patient.id:
            return found
        raise LinkError("reference: already linked to another patient")
    link = PatientLink(
        ref_hash=digest,
        patient_id=patient.id,
        kind=kind,
        created_at=now,
        created_by=actor.id,
    )
    session.add(link)
    session.flush()
    record_event(
        session,
        chain=patient_chain(patient.id),
        actor=actor,
        action="link",
        entity="patient_link",
        entity_id=link.id,
        patient_id=patient.id,
        now=now,
        details={"kind": kind},
    )
    return link


@dataclass(frozen=True, slots=True)
class LinkRow:
    """One link as listed: never the site's reference (only its hash is kept)."""

    id: int
    kind: str
    patient: str
    created_at: datetime
    created_by: str


def list_links(session: Session, patient: str | None = None) -> list[LinkRow]:
    """Every link (of one patient when given), oldest first."""
    query = (
        select(PatientLink, Patient.pseudonym)
        .join(Patient, Patient.id == PatientLink.patient_id)
        .order_by(PatientLink.id)
    )
    if patient is not None:
        query = query.where(Patient.pseudonym == patient)
    return [
        LinkRow(link.id, link.kind, pseudonym, link.created_at, link.created_by)
        for link, pseudonym in session.execute(query)
    ]


def unlink(
    session: Session, link_id: int, *, reason: str, actor: Actor, now: datetime
) -> LinkRow:
    """Remove a link (a reference linked to the wrong patient, say), audited on
    the patient's chain with the reason. Records already received through the
    link stay with that patient: retract them with retraction records.

    Raises:
        LinkError: no such link, or no reason given.
    """
    if not reason.strip():
        raise LinkError("reason: required")
    found = session.execute(
        select(PatientLink, Patient.pseudonym)
        .join(Patient, Patient.id == PatientLink.patient_id)
        .where(PatientLink.id == link_id)
    ).one_or_none()
    if found is None:
        raise LinkError("link: no such link")
    link, pseudonym = found
    row = LinkRow(link.id, link.kind, pseudonym, link.created_at, link.created_by)
    record_event(
        session,
        chain=patient_chain(link.patient_id),
        actor=actor,
        action="unlink",
        entity="patient_link",
        entity_id=link.id,
        patient_id=link.patient_id,
        now=now,
        reason=reason,
        details={"kind": link.kind},
    )
    session.delete(link)
    session.flush()
    return row


def find_patient(
    session: Session, refs: list[tuple[str, str]], pepper: str
) -> Patient | None:
    """The patient a message's references are linked to (in the caller's scope)."""
    for kind, ref in refs:
        link = session.scalar(
            select(PatientLink).where(
                PatientLink.ref_hash == ref_hash(kind, ref, pepper)
            )
        )
        if link is not None:
            # Through the (possibly unit-scoped) session: another unit's
            # patient is not found, exactly like an unlinked one.
            return session.scalar(select(Patient).where(Patient.id == link.patient_id))
    return None


@dataclass(slots=True)
class Receipt:
    """What became of one item."""

    disposition: str
    notes: list[Note]
    outcomes: list[Outcome] = field(default_factory=list)
    patient_id: int | None = None
    item_id: int | None = None
    duplicate: bool = False

    @property
    def stored(self) -> bool:
        """Whether any feed record was stored by this item."""
        return any(o.status == "stored" for o in self.outcomes)


def _versions(
    session: Session, channel: str, identity: str | None
) -> list[InboundItem]:
    """Every earlier item with this identity, oldest first."""
    if identity is None:
        return []
    return list(
        session.scalars(
            select(InboundItem)
            .where(InboundItem.channel == channel, InboundItem.identity == identity)
            .order_by(InboundItem.id)
        )
    )


RANK = {"final": 1, "amended": 2, "corrected": 2, "F": 1, "C": 2}
"""A correction outranks an original: an original that arrives after its
correction (a late or resent message) never replaces it."""


def _current_device(
    session: Session, patient_id: int, at: datetime
) -> OxygenDevice | None:
    """The oxygen device recorded for the patient and still current at ``at``
    (the state builder's 12 h), unless room air or an assumed cannula."""
    found = session.scalar(
        select(ClinicalRecord)
        .where(
            ClinicalRecord.patient_id == patient_id,
            ClinicalRecord.kind == "oxygen",
            ClinicalRecord.retracted_at.is_(None),
            ClinicalRecord.occurred_at <= at,
            ClinicalRecord.occurred_at
            >= at - timedelta(hours=StateSettings().oxygen_valid_h),
        )
        .order_by(ClinicalRecord.occurred_at.desc(), ClinicalRecord.id.desc())
        .limit(1)
    )
    if found is None or found.quality_flags:
        return None
    device = OxygenDevice(found.details["device"])
    return None if device is OxygenDevice.ROOM_AIR else device


def _live_keys(session: Session, source_system: str, keys: list[str]) -> list[str]:
    """Which of ``keys`` still name a record that is not retracted."""
    live = []
    for key in keys:
        found = session.scalar(
            select(ClinicalRecord.id)
            .where(
                ClinicalRecord.source_system == source_system,
                (ClinicalRecord.source_record_id == key)
                | ClinicalRecord.source_record_id.startswith(
                    f"{key}#", autoescape=True
                ),
                ClinicalRecord.retracted_at.is_(None),
            )
            .limit(1)
        )
        if found is not None:
            live.append(key)
    return live


@dataclass(slots=True)
class Plan:
    """What receiving one item will write, worked out before anything is."""

    item: Item
    digest: str
    patient_id: int | None
    records: list[dict[str, Any]]
    duplicate: InboundItem | None = None

    @property
    def refused(self) -> bool:
        """Whether the item is refused as a whole (nothing of it is stored)."""
        return self.item.action == "refuse"


def prepare(
    sessions: sessionmaker[Session],
    item: Item,
    *,
    refs: list[tuple[str, str]],
    content: Any,
    channel: str,
    source_system: str,
    pepper: str,
    now: datetime,
) -> Plan:
    """Find the patient and the earlier version, build the feed records and
    check each against the intake's rules, writing nothing.

    A resource is taken whole or not at all: when any of its records would be
    refused by the intake (a value beyond its plausibility limit, say), the
    item is refused and none of them is stored.
    """
    digest = content_digest(content)
    with sessions() as session:
        patient = find_patient(session, refs, pepper)
        pseudonym = None if patient is None else patient.pseudonym
        patient_id = None if patient is None else patient.id
        versions = _versions(session, channel, item.identity)
        same = next((v for v in versions if v.content_hash == digest), None)
        if same is not None:  # this content was received before, whenever
            return Plan(item, digest, same.patient_id, [], duplicate=same)
        current = next(
            (v for v in reversed(versions) if v.disposition == "graded"), None
        )
        live = (
            []
            if current is None
            else _live_keys(session, source_system, [k for _, k in current.record_keys])
        )
        if (
            live
            and current is not None
            and item.action == "grade"
            and RANK.get(current.status or "", 1) > RANK.get(item.status or "", 1)
        ):
            item.hold(
                "superseded",
                "status",
                "a correction of this observation is already graded: this earlier "
                "version is kept, not graded",
            )
            live = []
        owner = pseudonym
        if live and current is not None and current.patient_id != patient_id:
            # A later version names another patient: the earlier one's records
            # are withdrawn from the patient they were stored for.
            earlier = session.scalar(
                select(Patient).where(Patient.id == current.patient_id)
            )
            owner = None if earlier is None else earlier.pseudonym
            if owner is None:
                item.note(
                    "error",
                    "patient-changed",
                    _subject(item),
                    "an earlier version of this resource was received for a "
                    "patient this key may not write for: refused",
                )
        current_device = None
        if (
            patient_id is not None
            and item.at is not None
            and {v.concept for v in item.values} & {"flow_l_min", "device"}
            == {"flow_l_min"}
        ):
            current_device = _current_device(session, patient_id, item.at)
    if pseudonym is None and item.action != "refuse":
        item.note(
            "error",
            "patient-unlinked",
            _subject(item),
            "the patient reference is not linked to a crsmon patient this key "
            "may write for (crsmon links add)",
        )
    key = record_key(item.identity, digest)
    records: list[dict[str, Any]] = []
    if pseudonym is not None and item.action in ("grade", "retract"):
        if live and owner is not None:
            why = (
                "entered in error or cancelled at the source"
                if item.action == "retract"
                else "replaced by a later version of the same resource"
            )
            if owner != pseudonym:
                why += " (for another patient)"
            at = item.at or _time_of(current) or now
            records += retractions(
                live,
                patient=owner,
                source_system=source_system,
                key=key,
                at=at,
                reason=f"{channel}: {why}",
            )
        elif item.action == "retract":
            item.notes.append(
                Note(
                    "warning",
                    "nothing-to-retract",
                    "",
                    "no earlier graded version of this resource: nothing retracted",
                )
            )
        records += feed_records(
            item,
            patient=pseudonym,
            source_system=source_system,
            key=key,
            current_device=current_device,
        )
    for record in records:
        checked = parse_record(_json(record), now)
        if isinstance(checked, Refused):
            item.note(
                "error",
                "refused",
                _element_of(item, checked.error),
                f"crsmon feed record {checked.error}",
            )
    if item.action == "refuse":
        records = []
    return Plan(item, digest, patient_id, records)


def commit(
    sessions: sessionmaker[Session],
    plan: Plan,
    *,
    payload: str,
    channel: str,
    source_system: str,
    actor: Actor,
    now: datetime,
) -> Receipt:
    """Store a prepared item's records through the one intake path and keep
    the item (audited), whatever became of it."""
    item = plan.item
    earlier = plan.duplicate
    if earlier is not None:
        return Receipt(
            earlier.disposition,
            [Note("information", "duplicate", "", "already received: nothing new")],
            patient_id=earlier.patient_id,
            item_id=earlier.id,
            duplicate=True,
        )
    outcomes = [
        ingest_text(sessions, _json(record), now=now, channel=channel, actor=actor)
        for record in plan.records
    ]
    refusals = [o for o in outcomes if o.status in ("refused", "conflict")]
    for outcome in refusals:
        # Checked in prepare(): what is left is a conflict or a race with
        # another writer, answered for that record alone.
        why = outcome.error or "refused by the intake"
        item.notes.append(Note("error", "refused", "", f"crsmon feed record {why}"))
    disposition = {
        "grade": "graded",
        "hold": "not_graded",
        "retract": "retraction",
        "refuse": "refused",
    }[item.action]
    if plan.records and len(refusals) == len(plan.records):
        disposition = "refused"
    stored_keys = [
        [source_system, r["source_record_id"]]
        for r, o in zip(plan.records, outcomes, strict=True)
        if o.status in ("stored", "duplicate") and r["kind"] != "retraction"
    ]
    patient_id = plan.patient_id
    with sessions.begin() as session:
        row = InboundItem(
            channel=channel,
            resource_type=item.resource_type,
            identity=item.identity,
            content_hash=plan.digest,
            patient_id=patient_id,
            status=item.status,
            disposition=disposition,
            notes=[n.as_dict() for n in item.notes],
            record_keys=stored_keys,
            values=item.values_dict(),
            payload=payload,
            received_at=now,
        )
        session.add(row)
        session.flush()
        record_event(
            session,
            chain=QUARANTINE if patient_id is None else patient_chain(patient_id),
            actor=actor,
            action="receive",
            entity="inbound_item",
            entity_id=row.id,
            patient_id=patient_id,
            now=now,
            details={
                "channel": channel,
                "disposition": disposition,
                "content_hash": plan.digest,
            },
        )
        item_id = row.id
    return Receipt(disposition, item.notes, outcomes, patient_id, item_id)


def receive(
    sessions: sessionmaker[Session],
    item: Item,
    *,
    refs: list[tuple[str, str]],
    content: Any,
    payload: str,
    channel: str,
    source_system: str,
    pepper: str,
    actor: Actor,
    now: datetime,
) -> Receipt:
    """Take one read item: store its records (or retract), keep the item."""
    plan = prepare(
        sessions,
        item,
        refs=refs,
        content=content,
        channel=channel,
        source_system=source_system,
        pepper=pepper,
        now=now,
    )
    return commit(
        sessions,
        plan,
        payload=payload,
        channel=channel,
        source_system=source_system,
        actor=actor,
        now=now,
    )


def _subject(item: Item) -> str:
    """Where a message names its patient: PID-3 in HL7 v2, else ``subject``."""
    return "PID-3" if item.resource_type == "OBX" else f"{item.resource_type}.subject"


def _element_of(item: Item, error: str | None) -> str:
    """The element an intake refusal is about: the intake names a feed field
    (``temperature_c: ...``), which is the concept of one value read."""
    field_name = (error or "").partition(":")[0]
    for value in item.values:
        if value.concept == field_name or (
            field_name == "temperature_raw" and value.concept == "temperature_c"
        ):
            return value.element
    return ""


def _time_of(item: InboundItem | None) -> datetime | None:
    """The time an earlier item was read with (a retraction's own time when
    the entered-in-error version carries none)."""
    at = None if item is None else item.values.get("at")
    return None if at is None else datetime.fromisoformat(at)


def _json(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Hl7Answer:
    """The acknowledgement of one HL7 v2 message, and what became of its OBX."""

    code: str  # AA | AE | AR
    reason: str | None
    ack: str
    receipts: tuple[Receipt, ...] = ()


def receive_hl7(
    sessions: sessionmaker[Session],
    text: str,
    *,
    facilities: frozenset[str],
    pepper: str,
    now: datetime,
) -> Hl7Answer:
    """Take one ORU^R01: AR if it cannot be taken at all (unreadable, not
    ORU^R01, a sending facility not configured), AE if any OBX was refused
    (the first reason in MSA-3), else AA. Every OBX is kept as an item."""
    try:
        message = hl7v2.read_message(text)
    except hl7v2.Hl7Error as exc:
        return Hl7Answer("AR", str(exc), hl7v2.ack(text, "AR", str(exc), now))
    if message.facility not in facilities:
        why = "MSH-4: this sending facility is not configured (CRSMON_HL7_FACILITIES)"
        return Hl7Answer("AR", why, hl7v2.ack(text, "AR", why, now))
    actor = Actor(f"hl7:{message.facility}", "bedside")
    receipts = []
    for item, refs in zip(message.items, message.refs, strict=True):
        item.identity = _hl7_identity(sessions, message.facility, refs, item, pepper)
        # Not the control id: the same observation resent in another message
        # is a duplicate, not a new version.
        content = {
            "values": item.values_dict(),
            "status": item.status,
            "identity": item.identity,
        }
        receipts.append(
            receive(
                sessions,
                item,
                refs=refs,
                content=content,
                payload=_redacted_obx(message, item),
                channel="hl7v2",
                source_system=f"hl7-{_facility_key(message.facility)}",
                pepper=pepper,
                actor=actor,
                now=now,
            )
        )
    errors = [n for r in receipts for n in r.notes if n.severity == "error"]
    if not message.items:
        errors = [Note("error", "no-obx", "OBX", "the message holds no OBX")]
    if errors:
        first = errors[0]
        why = f"{first.element}: {first.text}" if first.element else first.text
        return Hl7Answer("AE", why, hl7v2.ack(text, "AE", why, now), tuple(receipts))
    return Hl7Answer("AA", None, hl7v2.ack(text, "AA", None, now), tuple(receipts))


def _hl7_identity(
    sessions: sessionmaker[Session],
    facility: str,
    refs: list[tuple[str, str]],
    item: Item,
    pepper: str,
) -> str:
    """The keyed identity of one OBX: facility, the linked patient (else its
    PID-3 references), code, sub-id and time in UTC, under HMAC with the
    pepper, so no medical record number can be recovered from it."""
    with sessions() as session:
        patient = find_patient(session, refs, pepper)
    who = (
        f"patient:{patient.id}"
        if patient is not None
        else "~".join(sorted(r for _, r in refs))
    )
    material = "|".join((facility, who, *item.key_parts))
    digest = hmac.new(pepper.encode(), material.encode(), hashlib.sha256)
    return "hl7v2:" + digest.hexdigest()[:40]


def _facility_key(facility: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in facility)
    return safe[:48] or "unknown"


def _redacted_obx(message: hl7v2.Message, item: Item) -> str:
    """What is kept of the message for one OBX: no PID (the link is by hash)."""
    return json.dumps(
        {
            "control_id": message.control_id,
            "facility": message.facility,
            "obx": item.values_dict(),
            "status": item.status,
        },
        separators=(",", ":"),
    )
