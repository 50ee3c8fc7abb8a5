"""``crsmon links add|list|remove`` in process: a site's patient references,
stored only as keyed hashes, audited on the patient's chain."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from crsmon.auth.keys import EMBEDDED_PEPPER
from crsmon.cli import main
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.db.models import AuditEvent, PatientLink
from crsmon.services.ingest import ingest_text
from crsmon.services.interfaces import find_patient, ref_hash

MRN = "HOSP|MRN-0042"


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'links.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    for patient in ("P-A", "P-B"):
        record = {
            "kind": "patient", "source_system": "ehr",
            "source_record_id": f"enrol-{patient}", "patient": patient,
            "age_years": 9.0, "care_unit": "PICU",
            "infusion_at": "2026-11-01T08:00:00+00:00",
        }  # fmt: skip
        outcome = ingest_text(
            make_sessions(engine), json.dumps(record), now=datetime.now(UTC),
            channel="test",
        )  # fmt: skip
        assert outcome.status == "stored"
    engine.dispose()
    monkeypatch.setenv("CRSMON_DATABASE_URL", url)
    monkeypatch.delenv("CRSMON_KEY_PEPPER", raising=False)
    return url


def _links(url: str) -> list[PatientLink]:
    engine = make_engine(url)
    try:
        with make_sessions(engine)() as session:
            return list(session.scalars(select(PatientLink).order_by(PatientLink.id)))
    finally:
        engine.dispose()


def _actions(url: str) -> list[tuple[str, str | None]]:
    engine = make_engine(url)
    try:
        with make_sessions(engine)() as session:
            return [
                (e.action, e.reason)
                for e in session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.entity == "patient_link")
                    .order_by(AuditEvent.id)
                )
            ]
    finally:
        engine.dispose()


def test_add_list_remove_keep_only_a_hash_and_are_audited(database: str) -> None:
    runner = CliRunner()
    added = runner.invoke(
        main, ["links", "add", "--kind", "identifier", "--ref", MRN, "--patient", "P-A"]
    )
    assert added.exit_code == 0, added.output
    again = runner.invoke(
        main, ["links", "add", "--kind", "identifier", "--ref", MRN, "--patient", "P-A"]
    )
    assert again.exit_code == 0  # idempotent
    (link,) = _links(database)
    assert link.ref_hash == ref_hash("identifier", MRN, EMBEDDED_PEPPER)
    assert "MRN-0042" not in link.ref_hash
    engine = make_engine(database)
    with make_sessions(engine)() as session:
        found = find_patient(session, [("identifier", MRN)], EMBEDDED_PEPPER)
        assert found is not None
        assert found.pseudonym == "P-A"
    engine.dispose()
    other = runner.invoke(
        main, ["links", "add", "--kind", "identifier", "--ref", MRN, "--patient", "P-B"]
    )
    assert other.exit_code == 1
    assert "already linked to another patient" in other.output
    missing = runner.invoke(
        main, ["links", "add", "--kind", "reference", "--ref", "Patient/9",
               "--patient", "P-NONE"],
    )  # fmt: skip
    assert missing.exit_code == 1
    assert "not enrolled" in missing.output
    listed = runner.invoke(main, ["links", "list", "--json"])
    (entry,) = [json.loads(line) for line in listed.output.splitlines()]
    assert (entry["id"], entry["kind"], entry["patient"]) == (link.id, "identifier",
                                                              "P-A")  # fmt: skip
    assert "MRN-0042" not in listed.output
    no_reason = runner.invoke(main, ["links", "remove", str(link.id), "--reason", " "])
    assert no_reason.exit_code == 1
    removed = runner.invoke(
        main, ["links", "remove", str(link.id), "--reason", "wrong patient"]
    )
    assert removed.exit_code == 0, removed.output
    assert _links(database) == []
    assert _actions(database) == [("link", None), ("unlink", "wrong patient")]
    gone = runner.invoke(main, ["links", "remove", str(link.id), "--reason", "again"])
    assert gone.exit_code == 1
    assert "no such link" in gone.output
    relinked = runner.invoke(
        main, ["links", "add", "--kind", "identifier", "--ref", MRN, "--patient", "P-B"]
    )
    assert relinked.exit_code == 0, relinked.output
    assert [lk.patient_id for lk in _links(database)] != [link.patient_id]
    verify = runner.invoke(main, ["audit", "verify"])
    assert verify.exit_code == 0, verify.output
