"""Integration: feed records stored once, refused ones quarantined (both databases)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.models import ClinicalRecord, Patient, QuarantinedRecord
from crsmon.db.repository import load_timeline
from crsmon.domain.records import Finding, Quantity
from crsmon.services.ingest import Outcome, ingest_text

NOW = datetime(2026, 3, 5, tzinfo=UTC)
ENROL = {
    "kind": "patient",
    "source_system": "ehr",
    "source_record_id": "enrol-1",
    "patient": "P-0001",
    "age_years": 7.0,
    "care_unit": "PICU",
    "infusion_at": "2026-03-01T08:00:00Z",
}


def send(sessions: sessionmaker[Session], n: int = 0, **record: Any) -> Outcome:
    """Ingest one record of the monitor feed (``n`` makes its id)."""
    envelope = {"source_system": "monitor", "source_record_id": f"m-{n}"}
    envelope["patient"] = "P-0001"
    text = json.dumps({**envelope, **record})
    return ingest_text(sessions, text, now=NOW, channel="test", line_no=n)


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def enrol(sessions: sessionmaker[Session]) -> None:
    assert ingest_text(sessions, json.dumps(ENROL), now=NOW, channel="test").status == (
        "stored"
    )


def test_the_same_record_twice_is_stored_once(sessions: sessionmaker[Session]) -> None:
    """A resent record returns the original rows and stores nothing new."""
    enrol(sessions)
    vitals = {"kind": "vitals", "observed_at": "2026-03-02T10:00:00Z"}
    first = send(sessions, 1, **vitals, temperature_c=38.5, sbp_mmhg=90)
    again = send(sessions, 1, **vitals, temperature_c=38.5, sbp_mmhg=90)
    assert first.status == "stored"
    assert again.status == "duplicate"
    assert again.record_ids == first.record_ids
    assert count(sessions, ClinicalRecord) == 2
    with sessions() as session:
        states = session.scalars(select(ClinicalRecord.grading_state)).all()
    assert set(states) == {"pending"}


def test_same_key_other_content_is_a_conflict(sessions: sessionmaker[Session]) -> None:
    """The same sender id with different values is refused and kept for review."""
    enrol(sessions)
    vitals = {"kind": "vitals", "observed_at": "2026-03-02T10:00:00Z"}
    send(sessions, 1, **vitals, temperature_c=38.5)
    conflict = send(sessions, 1, **vitals, temperature_c=39.5)
    assert conflict.status == "conflict"
    assert count(sessions, QuarantinedRecord) == 1
    assert enrolled_values(sessions) == [38.5]


def enrolled_values(sessions: sessionmaker[Session]) -> list[float | None]:
    with sessions() as session:
        return list(session.scalars(select(ClinicalRecord.value)).all())


def test_refused_records_are_quarantined_with_their_reason(
    sessions: sessionmaker[Session],
) -> None:
    """Invalid and unknown-patient records are stored nowhere but the quarantine."""
    enrol(sessions)
    bad = send(
        sessions, 2, kind="vitals", observed_at="2026-03-02T10:00:00Z", temperature_c=50
    )
    stranger = ingest_text(
        sessions,
        json.dumps({"kind": "treatment", "source_system": "ehr",
                    "source_record_id": "t1", "patient": "P-9999",
                    "given_at": "2026-03-02T10:00:00Z", "drug": "tocilizumab"}),
        now=NOW,
        channel="test",
    )  # fmt: skip
    assert bad.status == stranger.status == "refused"
    assert bad.error is not None
    assert bad.error.startswith("temperature_c: must be")
    assert stranger.error == "patient: not enrolled"
    assert count(sessions, ClinicalRecord) == 0
    with sessions() as session:
        kept = session.scalars(select(QuarantinedRecord)).all()
    assert [q.error for q in kept] == [bad.error, "patient: not enrolled"]
    assert kept[0].line_no == 2


def test_enrolling_twice_is_idempotent_and_conflicts_are_refused(
    sessions: sessionmaker[Session],
) -> None:
    """The same enrolment again is a duplicate; other details are a conflict."""
    enrol(sessions)
    again = ingest_text(sessions, json.dumps(ENROL), now=NOW, channel="test")
    changed = ingest_text(
        sessions, json.dumps({**ENROL, "age_years": 8.0}), now=NOW, channel="test"
    )
    assert again.status == "duplicate"
    assert changed.status == "conflict"
    assert count(sessions, Patient) == 1


def test_retractions_and_corrections_shape_the_current_timeline(
    sessions: sessionmaker[Session],
) -> None:
    """Entered-in-error and superseded rows leave the timeline; nothing is deleted."""
    enrol(sessions)
    at = "2026-03-02T10:00:00Z"
    send(sessions, 1, kind="vitals", observed_at=at, temperature_c=39.0, sbp_mmhg=80)
    send(
        sessions,
        2,
        kind="retraction",
        at=at,
        target_record_id="m-1",
        reason="wrong bed",
    )
    send(sessions, 3, kind="vitals", observed_at=at, temperature_c=37.0)
    send(sessions, 4, kind="vitals", observed_at=at, temperature_c=37.4,
         supersedes="m-3", correction_reason="typo")  # fmt: skip
    send(sessions, 5, kind="vasopressor_start", started_at=at, drug="norepinephrine",
         dose=0.05, unit="ug/kg/min")  # fmt: skip
    send(sessions, 6, kind="vasopressor_stop", stopped_at="2026-03-02T14:00:00Z",
         start_record_id="m-5")  # fmt: skip
    send(sessions, 7, kind="attribution", finding="fever", start_at=at,
         end_at="2026-03-03T10:00:00Z", by="dr-1", reason="line infection")  # fmt: skip
    send(sessions, 8, kind="outcome", at="2026-03-04T10:00:00Z", event="death",
         death_attributable_to_crs=False)  # fmt: skip
    with sessions() as session:
        patient = session.scalars(select(Patient)).one()
        timeline = load_timeline(session, patient)
        retracted = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.retracted_at.is_not(None))
        ).all()
    assert {r.source_record_id for r in retracted} == {
        "m-1#temperature_c",
        "m-1#sbp_mmhg",
    }
    assert [(m.quantity, m.value) for m in timeline.measurements] == [
        (Quantity.TEMPERATURE_C, 37.4)
    ]
    (infusion,) = timeline.infusions
    assert infusion.stopped_at == datetime(2026, 3, 2, 14, tzinfo=UTC)
    (attribution,) = timeline.attributions
    assert attribution.finding is Finding.FEVER
    assert attribution.end_at == datetime(2026, 3, 3, 10, tzinfo=UTC)
    assert timeline.death is not None
    assert timeline.death.attributable_to_crs is False
    assert count(sessions, ClinicalRecord) == 9  # every row kept
