"""Integration: unit stays rebuilt from transfers and discharges (both databases).

The stays are a projection of the enrolment unit and the patient's current
``transfer`` and ``discharge`` records, so the order records arrive in must not
matter, and a correction or retraction must re-derive them.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.models import ClinicalRecord, Patient, QuarantinedRecord, UnitStay
from crsmon.db.repository import (
    current_unit,
    patient_by_pseudonym,
    rebuild_unit_stays,
    unit_stays,
)
from crsmon.services.ingest import Outcome, ingest_text

NOW = datetime(2026, 3, 20, tzinfo=UTC)
INFUSION = datetime(2026, 3, 1, 8, tzinfo=UTC)
Stay = tuple[str, datetime, datetime | None]


def at(hours: float) -> str:
    """An ISO time ``hours`` after the infusion."""
    return (INFUSION + timedelta(hours=hours)).isoformat()


def h(hours: float) -> datetime:
    return INFUSION + timedelta(hours=hours)


def enrol(sessions: sessionmaker[Session], patient: str = "P-0001") -> None:
    record = {
        "kind": "patient",
        "source_system": "ehr",
        "source_record_id": f"enrol-{patient}",
        "patient": patient,
        "age_years": 7.0,
        "care_unit": "PICU",
        "infusion_at": INFUSION.isoformat(),
    }
    outcome = ingest_text(sessions, json.dumps(record), now=NOW, channel="test")
    assert outcome.status == "stored"


def transfer(key: str, hours: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "transfer", "source_record_id": key,
            "transferred_at": at(hours), "care_unit": unit, **extra}  # fmt: skip


def discharge(key: str, hours: float, **extra: Any) -> dict[str, Any]:
    return {"kind": "discharge", "source_record_id": key,
            "discharged_at": at(hours), **extra}  # fmt: skip


def send(
    sessions: sessionmaker[Session], record: dict[str, Any], patient: str = "P-0001"
) -> Outcome:
    """Ingest one record from the ADT system (``adt``)."""
    body = {"source_system": "adt", "patient": patient, **record}
    if patient != "P-0001":
        body["source_record_id"] = f"{patient}/{record['source_record_id']}"
    return ingest_text(sessions, json.dumps(body), now=NOW, channel="test")


def stays(sessions: sessionmaker[Session], patient: str = "P-0001") -> list[Stay]:
    with sessions() as session:
        pid = patient_by_pseudonym(session, patient).id
        return [
            (s.care_unit, s.from_at, s.to_at) for s in unit_stays(session, [pid])[pid]
        ]


def stay_rows(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(UnitStay)) or 0)


def test_enrolment_opens_the_first_stay(sessions: sessionmaker[Session]) -> None:
    enrol(sessions)
    assert stays(sessions) == [("PICU", INFUSION, None)]


def test_transfer_discharge_and_readmission(sessions: sessionmaker[Session]) -> None:
    """A transfer moves the patient, a discharge ends the stay, a transfer readmits."""
    enrol(sessions)
    assert send(sessions, transfer("t-1", 30, "WARD")).status == "stored"
    assert stays(sessions) == [("PICU", INFUSION, h(30)), ("WARD", h(30), None)]
    assert send(sessions, discharge("d-1", 100, destination="home")).status == "stored"
    assert stays(sessions) == [
        ("PICU", INFUSION, h(30)),
        ("WARD", h(30), h(100)),
    ]
    with sessions() as session:
        pid = patient_by_pseudonym(session, "P-0001").id
        now_at = current_unit(unit_stays(session, [pid])[pid])
        rows = session.scalars(select(ClinicalRecord).order_by(ClinicalRecord.id))
        stored = [(r.kind, r.occurred_at, r.details, r.grading_state) for r in rows]
    assert (now_at.care_unit, now_at.discharged_at) == (None, h(100))
    assert stored == [
        ("transfer", h(30), {"care_unit": "WARD"}, "pending"),
        ("discharge", h(100), {"destination": "home"}, "pending"),
    ]
    send(sessions, transfer("t-2", 120, "PICU"))
    assert stays(sessions) == [
        ("PICU", INFUSION, h(30)),
        ("WARD", h(30), h(100)),
        ("PICU", h(120), None),
    ]
    with sessions() as session:
        now_at = current_unit(unit_stays(session, [pid])[pid])
    assert (now_at.care_unit, now_at.discharged_at) == ("PICU", None)


def test_moves_that_change_nothing(sessions: sessionmaker[Session]) -> None:
    """A transfer to the same unit, a second discharge: no stay and no write."""
    enrol(sessions)
    send(sessions, transfer("t-1", 10, "PICU"))
    assert stays(sessions) == [("PICU", INFUSION, None)]
    send(sessions, discharge("d-1", 50))
    send(sessions, discharge("d-2", 60, destination="hospice"))
    assert stays(sessions) == [("PICU", INFUSION, h(50))]
    with sessions() as session:
        (row,) = session.scalars(select(UnitStay)).all()
        patient = session.scalars(select(Patient)).one()
        again = rebuild_unit_stays(session, patient)
        assert again == [row]  # already right: the same row, nothing written
        assert not session.dirty
        assert not session.new
        assert not session.deleted


FEED = [
    transfer("t-pre", -20, "ONC-WARD"),  # admitted before the infusion
    transfer("t-1", 24, "ICU"),
    transfer("t-1b", 24, "HDU"),  # same time as t-1: ordered by id, after it
    transfer("t-same", 30, "HDU"),  # already there
    transfer("t-2", 48, "PICU"),
    discharge("d-1", 96, destination="home"),
    discharge("d-2", 97, destination="other"),  # nothing open: nothing changes
    transfer("t-3", 120, "PICU"),  # readmission
    transfer("t-4", 130, "ICU"),
    discharge("d-3", 130),  # same time as t-4: after the transfer
]
EXPECTED = [
    ("ONC-WARD", h(-20), INFUSION),
    ("PICU", INFUSION, h(24)),
    ("ICU", h(24), h(24)),
    ("HDU", h(24), h(48)),
    ("PICU", h(48), h(96)),
    ("PICU", h(120), h(130)),
    ("ICU", h(130), h(130)),
]


def test_in_order_and_shuffled_arrival_give_the_same_stays(
    sessions: sessionmaker[Session],
) -> None:
    """Each patient gets the same records in another order; the stays agree."""
    orders = [
        FEED,
        FEED[::-1],
        FEED[1::2] + FEED[::2],
        FEED[5:] + FEED[:5],
        [FEED[i] for i in (7, 2, 9, 0, 5, 3, 8, 1, 6, 4)],
    ]
    patients = [f"P-{n:04d}" for n in range(1, len(orders) + 1)]
    for patient, order in zip(patients, orders, strict=True):
        enrol(sessions, patient)
        for record in order:
            assert send(sessions, record, patient).status == "stored"
    for patient in patients:
        assert stays(sessions, patient) == EXPECTED, patient
    with sessions() as session:
        views = unit_stays(session, [patient_by_pseudonym(session, "P-0001").id])
        (first,) = views.values()
        assert current_unit(first).discharged_at == h(130)


def test_a_transfer_at_the_infusion_and_a_discharge_with_nothing_open(
    sessions: sessionmaker[Session],
) -> None:
    """Enrolment comes first at its own time; a discharge before it closes nothing."""
    enrol(sessions)
    send(sessions, discharge("d-0", -5))
    send(sessions, transfer("t-0", 0, "ICU"))
    assert stays(sessions) == [("PICU", INFUSION, INFUSION), ("ICU", INFUSION, None)]
    send(sessions, transfer("t-pre", -10, "PICU"))  # already in the enrolment unit
    send(sessions, discharge("d-pre", -8))
    send(sessions, transfer("t-re", -4, "PICU"))  # the enrolment stay from then
    assert stays(sessions) == [
        ("PICU", h(-10), h(-8)),
        ("PICU", h(-4), INFUSION),
        ("ICU", INFUSION, None),
    ]


def test_retraction_and_correction_of_a_transfer_rebuild_the_stays(
    sessions: sessionmaker[Session],
) -> None:
    """Entered in error: the stay goes; corrected: the stay follows the correction."""
    enrol(sessions)
    send(sessions, transfer("t-1", 30, "WARD"))
    send(sessions, transfer("t-2", 60, "ICU"))
    retract = {"kind": "retraction", "source_record_id": "r-1", "at": at(61),
               "target_record_id": "t-1", "reason": "wrong patient"}  # fmt: skip
    assert send(sessions, retract).status == "stored"
    assert stays(sessions) == [("PICU", INFUSION, h(60)), ("ICU", h(60), None)]
    fixed = transfer("t-2-fix", 50, "HDU", supersedes="t-2", correction_reason="unit")
    assert send(sessions, fixed).status == "stored"
    assert stays(sessions) == [("PICU", INFUSION, h(50)), ("HDU", h(50), None)]
    undo = {"kind": "retraction", "source_record_id": "r-2", "at": at(62),
            "target_record_id": "t-2-fix", "reason": "the first was right"}  # fmt: skip
    send(sessions, undo)  # the correction retracted: the original counts again
    assert stays(sessions) == [("PICU", INFUSION, h(60)), ("ICU", h(60), None)]
    with sessions() as session:
        kept = session.scalar(select(func.count()).select_from(ClinicalRecord))
    assert kept == 5  # append-only: every record is kept


def test_corrections_of_other_kinds_leave_the_stays(
    sessions: sessionmaker[Session],
) -> None:
    """Vitals corrections and retractions do not touch the stays; a record of
    another kind that supersedes a transfer replaces it, as in the current view."""
    enrol(sessions)
    send(sessions, transfer("t-1", 30, "WARD"))
    vitals = {"kind": "vitals", "source_record_id": "v-1", "observed_at": at(10),
              "temperature_c": 38.0}  # fmt: skip
    send(sessions, vitals)
    send(sessions, {**vitals, "source_record_id": "v-1-fix", "temperature_c": 38.3,
                    "supersedes": "v-1", "correction_reason": "typo"})  # fmt: skip
    send(sessions, {"kind": "retraction", "source_record_id": "r-1", "at": at(11),
                    "target_record_id": "v-1-fix", "reason": "probe"})  # fmt: skip
    assert stays(sessions) == [("PICU", INFUSION, h(30)), ("WARD", h(30), None)]
    outcome = {"kind": "outcome", "source_record_id": "o-1", "at": at(31),
               "event": "last_follow_up", "supersedes": "t-1",
               "correction_reason": "not a transfer"}  # fmt: skip
    send(sessions, outcome)
    assert stays(sessions) == [("PICU", INFUSION, None)]
    send(sessions, {"kind": "retraction", "source_record_id": "r-2", "at": at(32),
                    "target_record_id": "o-1", "reason": "it was"})  # fmt: skip
    assert stays(sessions) == [("PICU", INFUSION, h(30)), ("WARD", h(30), None)]


def test_a_retraction_sent_under_another_patient_is_refused(
    sessions: sessionmaker[Session],
) -> None:
    """A retraction may only touch the patient it names: a mix-up is a conflict."""
    enrol(sessions, "P-0001")
    enrol(sessions, "P-0002")
    send(sessions, transfer("t-1", 30, "WARD"))
    retract = {"kind": "retraction", "source_record_id": "r-1", "at": at(31),
               "target_record_id": "t-1", "reason": "wrong patient"}  # fmt: skip
    body = {"source_system": "adt", "patient": "P-0002", **retract}
    outcome = ingest_text(sessions, json.dumps(body), now=NOW, channel="test")
    assert outcome.status == "conflict"
    assert stays(sessions, "P-0001") == [
        ("PICU", INFUSION, INFUSION + timedelta(hours=30)),
        ("WARD", INFUSION + timedelta(hours=30), None),
    ]
    assert stays(sessions, "P-0002") == [("PICU", INFUSION, None)]


def test_a_resent_transfer_is_stored_once(sessions: sessionmaker[Session]) -> None:
    """Idempotent: the same record is a duplicate; other content is a conflict."""
    enrol(sessions)
    first = send(sessions, transfer("t-1", 30, "WARD"))
    again = send(sessions, transfer("t-1", 30, "WARD"))
    other = send(sessions, transfer("t-1", 30, "ICU"))
    assert (first.status, again.status, other.status) == (
        "stored",
        "duplicate",
        "conflict",
    )
    assert again.record_ids == first.record_ids
    assert stays(sessions) == [("PICU", INFUSION, h(30)), ("WARD", h(30), None)]
    assert stay_rows(sessions) == 2


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (
            {"kind": "transfer", "source_record_id": "bad-1",
             "transferred_at": "2026-03-02T10:00:00", "care_unit": "ICU"},
            "transferred_at: Input should have timezone info",
        ),
        (
            {"kind": "transfer", "source_record_id": "bad-2",
             "transferred_at": "2026-03-02T10:00:00Z", "care_unit": ""},
            "care_unit: String should have at least 1 character",
        ),
        (
            {"kind": "transfer", "source_record_id": "bad-3",
             "transferred_at": "2026-03-02T10:00:00Z", "care_unit": "U" * 65},
            "care_unit: String should have at most 64 characters",
        ),
        (
            {"kind": "discharge", "source_record_id": "bad-4",
             "discharged_at": "2026-03-02T10:00:00Z", "destination": "ward"},
            "destination: Input should be 'home', 'other_hospital', 'hospice' "
            "or 'other'",
        ),
        (
            {"kind": "discharge", "source_record_id": "bad-5",
             "discharged_at": "2026-03-02T10:00:00Z", "care_unit": "ICU"},
            "care_unit: unknown field (not part of the schema; nothing is ignored)",
        ),
        (
            {"kind": "discharge", "source_record_id": "bad-6",
             "discharged_at": "2026-03-25T10:00:00Z"},
            "discharged_at: is more than 5 minutes in the future of the server clock",
        ),
    ],
)  # fmt: skip
def test_a_bad_record_is_refused_naming_the_field(
    sessions: sessionmaker[Session], record: dict[str, Any], reason: str
) -> None:
    enrol(sessions)
    outcome = send(sessions, record)
    assert (outcome.status, outcome.error) == ("refused", reason)
    with sessions() as session:
        (kept,) = session.scalars(select(QuarantinedRecord)).all()
        stored = session.scalar(select(func.count()).select_from(ClinicalRecord))
    assert (kept.error, kept.source_record_id) == (reason, record["source_record_id"])
    assert stored == 0
    assert stays(sessions) == [("PICU", INFUSION, None)]


def test_concurrent_transfers_give_the_stays_of_all_of_them(
    sessions: sessionmaker[Session],
) -> None:
    """Rebuilds take the patient's lock, so none of them misses another's record."""
    enrol(sessions)
    units = ["ICU", "WARD", "HDU", "PICU"]
    records = [transfer(f"t-{n}", 10 + n, units[n % 4]) for n in range(12)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda r: send(sessions, r), records))
    assert {o.status for o in outcomes} == {"stored"}
    expected: list[Stay] = [("PICU", INFUSION, h(10))]
    expected += [(units[n % 4], h(10 + n), h(11 + n)) for n in range(11)]
    expected += [(units[11 % 4], h(21), None)]
    assert stays(sessions) == expected


def test_reads_and_rebuilds_without_stays(sessions: sessionmaker[Session]) -> None:
    """No stay means no unit; a patient without the enrolment stay cannot be rebuilt."""
    assert (current_unit([]).care_unit, current_unit([]).discharged_at) == (None, None)
    enrol(sessions)
    with sessions.begin() as session:
        session.execute(delete(UnitStay))
    with sessions() as session:
        patient = session.scalars(select(Patient)).one()
        assert unit_stays(session, [patient.id]) == {patient.id: []}
        with pytest.raises(LookupError, match="no enrolment stay"):
            rebuild_unit_stays(session, patient)
