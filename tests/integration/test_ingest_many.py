"""Integration: ``ingest_many`` takes each record exactly as ``ingest_text``
would, one at a time (both databases), while storing runs of plain records
together with one audit event per patient."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.audit import verify
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.db.models import AuditEvent, ClinicalRecord, QuarantinedRecord
from crsmon.services.ingest import ingest_many, ingest_text

NOW = datetime(2026, 3, 5, tzinfo=UTC)


def enrolment(patient: str, unit: str = "PICU") -> dict[str, Any]:
    return {
        "kind": "patient",
        "source_system": "ehr",
        "source_record_id": f"enrol-{patient}",
        "patient": patient,
        "age_years": 7.0,
        "care_unit": unit,
        "infusion_at": "2026-03-01T08:00:00Z",
    }


def feed(seed: int) -> list[str]:
    """A mixed feed: enrolments, vitals, oxygen, labs, drugs, corrections, a
    retraction, a transfer, duplicates, conflicts, unknown patients, a time far
    from the infusion, repeats inside one run, and lines the parser refuses."""
    rng = random.Random(seed)  # noqa: S311 - a synthetic feed
    lines = [json.dumps(enrolment(p)) for p in ("P-1", "P-2", "P-3")]
    sent: list[dict[str, Any]] = []
    for n in range(60):
        patient = rng.choice(("P-1", "P-2", "P-3", "P-3", "P-NOBODY"))
        at = f"2026-03-0{2 + n % 3}T{n % 24:02d}:00:00Z"
        kind = rng.choice(("vitals", "vitals", "oxygen", "lab", "treatment"))
        record: dict[str, Any] = {
            "source_system": "monitor",
            "source_record_id": f"m-{n}",
            "patient": patient,
            "kind": kind,
        }
        if kind == "vitals":
            record |= {
                "observed_at": at,
                "temperature_c": rng.choice((37.0, 38.6)),
                "sbp_mmhg": float(rng.randint(70, 120)),
            }
        elif kind == "oxygen":
            record |= {"observed_at": at, "device": "nasal_cannula", "flow_l_min": 2}
        elif kind == "lab":
            record |= {
                "observed_at": at,
                "analyte": "crp",
                "value": 12.0,
                "unit": "mg/L",
            }
        else:
            record |= {"given_at": at, "drug": "tocilizumab"}
        if n == 7:
            record["observed_at"] = "2016-03-02T10:00:00Z"  # years from infusion
        sent.append(record)
        lines.append(json.dumps(record))
        roll = rng.random()
        if roll < 0.1:
            lines.append(json.dumps(record))  # the same again: a duplicate
        elif roll < 0.15:
            lines.append(
                json.dumps(
                    record
                    | {"kind": "vitals", "observed_at": at, "temperature_c": 39.9}
                )
            )
        elif roll < 0.2:
            lines.append(json.dumps(record)[:-3])  # not JSON
    clash = next(r for r in sent if r["kind"] == "vitals" and r["patient"] == "P-1")
    lines.append(json.dumps(clash | {"temperature_c": 40.4}))  # a conflict
    corrected = next(r for r in sent if r["kind"] == "vitals" and r["patient"] == "P-2")
    lines.append(
        json.dumps(
            corrected
            | {
                "source_record_id": "fix-1",
                "temperature_c": 36.9,
                "supersedes": corrected["source_record_id"],
                "correction_reason": "probe re-seated",
            }
        )
    )
    target = next(r for r in sent if r["patient"] == "P-3")
    lines.append(
        json.dumps(
            {
                "kind": "retraction",
                "source_system": "monitor",
                "source_record_id": "ret-1",
                "patient": "P-3",
                "at": "2026-03-04T10:00:00Z",
                "target_record_id": target["source_record_id"],
                "reason": "wrong patient's monitor",
            }
        )
    )
    lines.append(
        json.dumps(
            {
                "kind": "transfer",
                "source_system": "adt",
                "source_record_id": "t-1",
                "patient": "P-1",
                "care_unit": "BMT",
                "transferred_at": "2026-03-03T12:00:00Z",
            }
        )
    )
    lines += lines[3:20]  # a resend of part of the feed, after the rest
    return lines


def state(sessions: sessionmaker[Session]) -> tuple[list[Any], list[Any]]:
    """What is stored, without ids and times of storage."""
    with sessions() as session:
        records = sorted(
            (
                r.kind,
                r.source_system,
                r.source_record_id,
                r.content_hash,
                r.quantity,
                r.value,
                r.retracted_at is not None,
                r.supersedes_id is not None,
                r.grading_state,
            )
            for r in session.scalars(select(ClinicalRecord))
        )
        refused = sorted(
            (q.source_record_id or "", q.error)
            for q in session.scalars(select(QuarantinedRecord))
        )
    return records, refused


def fresh(database_url: str, tmp_path: Path, name: str) -> sessionmaker[Session]:
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / name}.sqlite3"
    else:
        from conftest import reset_schema

        url = reset_schema(database_url)
    upgrade(url)
    return make_sessions(make_engine(url))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_same_outcomes_and_rows_as_one_at_a_time(
    database_url: str, tmp_path: Path, seed: int
) -> None:
    lines = feed(seed)
    one = fresh(database_url, tmp_path, "one")
    singly = [
        ingest_text(one, text, now=NOW, channel="t", line_no=n)
        for n, text in enumerate(lines, start=1)
    ]
    expected = state(one)
    one.kw["bind"].dispose()
    many = fresh(database_url, tmp_path, "many")
    together = ingest_many(many, list(enumerate(lines, start=1)), now=NOW, channel="t")
    assert [(o.status, o.error) for o in together] == [
        (o.status, o.error) for o in singly
    ]
    assert {o.status for o in together} == {
        "stored",
        "duplicate",
        "refused",
        "conflict",
    }
    assert state(many) == expected
    with many() as session:
        assert verify(session).ok
        events = list(session.scalars(select(AuditEvent)))
    stored = [o for o in together if o.status == "stored"]
    audited = {i for e in events for i in e.details.get("record_ids", [])}
    assert {i for o in stored for i in o.record_ids} <= audited
    grouped = [e for e in events if e.details.get("kind") == "batch"]
    assert grouped  # plain runs were stored together
    assert len(events) < len(stored) + 10
    many.kw["bind"].dispose()


def test_a_unit_scoped_batch_sees_only_its_units(
    database_url: str, tmp_path: Path
) -> None:
    """A patient of another unit is refused like one not enrolled."""
    from crsmon.db.scope import scoped_sessions

    sessions = fresh(database_url, tmp_path, "scoped")
    for patient, unit in (("P-A", "PICU"), ("P-B", "BMT")):
        ingest_text(
            sessions, json.dumps(enrolment(patient, unit)), now=NOW, channel="t"
        )
    lines = [
        json.dumps(
            {
                "kind": "vitals",
                "source_system": "m",
                "source_record_id": f"v{p}",
                "patient": p,
                "observed_at": "2026-03-02T10:00:00Z",
                "temperature_c": 38.8,
            }
        )
        for p in ("P-A", "P-B")
    ]
    picu = scoped_sessions(sessions.kw["bind"], ["PICU"])
    outcomes = ingest_many(picu, list(enumerate(lines, start=1)), now=NOW, channel="t")
    assert [o.status for o in outcomes] == ["stored", "refused"]
    assert outcomes[1].error == "patient: not enrolled"
    sessions.kw["bind"].dispose()


def test_stored_keys_are_found_per_source_system_in_chunks(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same record id under two source systems is two keys; lookups in
    chunks (of four here, the last one short) find every stored key and
    nothing else."""
    import crsmon.db.repository as repository

    sessions = fresh(database_url, tmp_path, "keys")
    lines = [json.dumps(enrolment("P-1"))] + [
        json.dumps(
            {
                "kind": "vitals",
                "source_system": system,
                "source_record_id": f"v-{n}",
                "patient": "P-1",
                "observed_at": f"2026-03-02T{n:02d}:00:00Z",
                "temperature_c": 37.0 + n / 10,
            }
        )
        for system, count in (("monitor", 5), ("ehr", 3))
        for n in range(count)
    ]
    outcomes = ingest_many(
        sessions, list(enumerate(lines, start=1)), now=NOW, channel="t"
    )
    assert {o.status for o in outcomes} == {"stored"}
    with sessions() as session:
        stored = {
            (r.source_system, r.source_record_id): (r.id, r.content_hash)
            for r in session.scalars(select(ClinicalRecord))
        }
        missing = [("monitor", "v-0"), ("ehr", "v-4#temperature_c"), ("adt", "v-0")]
        asked = [*stored, *missing]
        asked += asked[:3]  # repeats
        monkeypatch.setattr(repository, "MAX_BOUND", 4)  # monitor: 4 + 2 keys
        assert repository.existing_keys(session, asked) == stored
        assert repository.existing_keys(session, []) == {}
    assert len(stored) == 8  # eight vitals sets of one value: v-<n>#temperature_c
    sessions.kw["bind"].dispose()
