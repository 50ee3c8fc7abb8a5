"""HL7 v2 ORU^R01 in, ACKs out: the message rules in process, then a real
`crsmon mllp` listener fed over TCP by a sender, and `crsmon ingest --hl7`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hl7_build import (
    BPM,
    DEVICE,
    FACILITY,
    FAHR,
    FLOW,
    HR,
    L_MIN,
    MMHG,
    MRN,
    NIBP_DIA,
    NIBP_SYS,
    PERCENT,
    SPO2,
    TEMP_F,
    dtm,
    mllp_send,
    msa,
    obx,
    oru,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.auth.keys import EMBEDDED_PEPPER
from crsmon.cli import main
from crsmon.db.audit import Actor
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.models import Alert, ClinicalRecord, Grade, InboundItem
from crsmon.domain.catalog import resolve_rule_set
from crsmon.services.dispatch import InProcessDispatcher
from crsmon.services.ingest import ingest_text
from crsmon.services.interfaces import link_patient
from crsmon.services.mllp import handle_message
from crsmon.services.monitoring import AlertPolicy

PATIENT = "P-HL7"
INFUSION = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)


def at(hours: float) -> datetime:
    return INFUSION + timedelta(hours=hours)


def enrol(sessions: sessionmaker[Session]) -> None:
    record = {
        "kind": "patient", "source_system": "ehr", "source_record_id": "enrol-hl7",
        "patient": PATIENT, "age_years": 7.0, "weight_kg": 24.0,
        "care_unit": "PICU", "infusion_at": INFUSION.isoformat(),
    }  # fmt: skip
    now = datetime.now(UTC)
    assert ingest_text(sessions, json.dumps(record), now=now, channel="t").status == (
        "stored"
    )
    with sessions.begin() as session:
        link_patient(
            session,
            kind="identifier",
            ref=f"HOSP|{MRN}",
            pseudonym=PATIENT,
            pepper=EMBEDDED_PEPPER,
            actor=Actor("test", "admin"),
            now=now,
        )


@pytest.fixture
def hl7_sessions(database_url: str) -> Any:
    from crsmon.db.migrate import upgrade

    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    enrol(sessions)
    yield sessions
    engine.dispose()


def send(sessions: sessionmaker[Session], message: str) -> Any:
    dispatcher = InProcessDispatcher(
        sessions, resolve_rule_set("astct-2019"), AlertPolicy()
    )
    return handle_message(
        sessions,
        dispatcher,
        message,
        facilities=frozenset({FACILITY}),
        pepper=EMBEDDED_PEPPER,
    )


def grades(sessions: sessionmaker[Session]) -> dict[datetime, int]:
    """The current grade at each time (the newest row at a time wins)."""
    with sessions() as session:
        rows = session.scalars(select(Grade).order_by(Grade.id)).all()
    return {g.evaluated_at: g.grade for g in rows}


def ending(message: str, style: str) -> str:
    return message.replace("\r", {"CR": "\r", "LF": "\n", "CRLF": "\r\n"}[style])


@pytest.mark.parametrize("style", ["CR", "LF", "CRLF"])
def test_a_monitor_message_grades_device_before_flow(
    hl7_sessions: sessionmaker[Session], style: str
) -> None:
    """Fever in [degF] (MDC_DIM_FAHR), SpO2, NIBP, and 5 L/min through a
    Venturi mask: the device makes it grade 3 despite <= 6 L/min (peers.md
    §3 #13); every line ending reads the same."""
    when = dtm(at(30))
    message = oru(
        "MSG-1",
        obx(1, TEMP_F, "102.2", FAHR, when),
        obx(2, SPO2, "91", PERCENT, when),
        obx(3, NIBP_SYS, "104", MMHG, when),
        obx(4, NIBP_DIA, "61", MMHG, when),
        obx(5, HR, "128", BPM, when),
        obx(6, FLOW, "5", L_MIN, when),
        obx(7, DEVICE, "Venturi mask", "", when, kind="ST"),
    )
    answer = send(hl7_sessions, ending(message, style))
    assert answer.code == "AA", answer.reason
    assert msa(answer.ack)[:2] == ["AA", "MSG-1"]
    with hl7_sessions() as session:
        temp = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.quantity == "temperature_c")
        ).one()
        oxygen = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.kind == "oxygen")
        ).all()
    assert temp.value == pytest.approx(39.0)
    assert temp.details["original_unit"] == "[degF]"
    assert {(o.details["device"], o.details["flow_l_min"]) for o in oxygen} == {
        ("venturi_mask", 5.0),
        ("venturi_mask", None),
    }
    assert max(grades(hl7_sessions).values()) == 3
    again = send(hl7_sessions, ending(message, style))
    assert again.code == "AA"  # the same message again: nothing new
    resent = send(hl7_sessions, ending(message.replace("MSG-1", "MSG-1B"), style))
    assert resent.code == "AA"  # the same observations in another message, too
    assert all(r.duplicate for r in resent.receipts)
    with hl7_sessions() as session:
        assert len(session.scalars(select(InboundItem)).all()) == 7
        assert len(session.scalars(select(ClinicalRecord)).all()) == len(oxygen) + 5


def test_status_correction_deletion_absent_and_refusals(
    hl7_sessions: sessionmaker[Session],
) -> None:
    when = dtm(at(20))
    first = send(hl7_sessions, oru("M-1", obx(1, TEMP_F, "101.3", FAHR, when)))
    assert first.code == "AA"
    assert max(grades(hl7_sessions).values()) == 1
    corrected = oru("M-2", obx(1, TEMP_F, "98.6", FAHR, when, status="C"))
    assert send(hl7_sessions, corrected).code == "AA"
    assert max(grades(hl7_sessions).values(), default=0) == 0
    deleted = oru("M-3", obx(1, TEMP_F, "98.6", FAHR, when, status="D"))
    assert send(hl7_sessions, deleted).code == "AA"
    with hl7_sessions() as session:
        live = session.scalars(
            select(ClinicalRecord).where(
                ClinicalRecord.kind == "measurement",
                ClinicalRecord.retracted_at.is_(None),
            )
        ).all()
    assert live == []
    later = dtm(at(22))
    preliminary = oru("M-4", obx(1, SPO2, "85", PERCENT, later, status="P"))
    assert send(hl7_sessions, preliminary).code == "AA"
    absent = oru("M-5", obx(1, SPO2, "", PERCENT, later, status="X"))
    assert send(hl7_sessions, absent).code == "AA"
    with hl7_sessions() as session:
        kept = session.scalars(select(InboundItem).order_by(InboundItem.id)).all()
    assert [k.disposition for k in kept][-2:] == ["not_graded", "not_graded"]
    assert kept[-1].values["values"][0]["absent"] == "X"
    naive = oru("M-6", obx(1, SPO2, "97", PERCENT, later[:14]))
    refused = send(hl7_sessions, naive)
    assert refused.code == "AE"
    assert "UTC offset" in (refused.reason or "")
    repeated = oru("M-7", obx(1, HR, "60~120", BPM, later))
    assert send(hl7_sessions, repeated).code == "AE"
    kelvin = oru("M-8", obx(1, TEMP_F, "310", "K", later))
    assert "not a unit" in (send(hl7_sessions, kelvin).reason or "")
    stranger = oru("M-9", obx(1, SPO2, "97", PERCENT, later), mrn="MRN-0000")
    assert send(hl7_sessions, stranger).code == "AE"
    outsider = send(hl7_sessions, oru("M-10", facility="ELSEWHERE"))
    assert outsider.code == "AR"
    assert msa(outsider.ack)[0] == "AR"
    assert send(hl7_sessions, oru("M-11", kind="ADT^A01")).code == "AR"
    assert send(hl7_sessions, "not hl7 at all").code == "AR"


def wait_for_port(log: Path, process: subprocess.Popen[bytes], deadline: float) -> int:
    """The port `crsmon mllp --port 0` says it listens on (from its stderr)."""
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1])
        if process.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail("crsmon mllp did not start: " + log.read_text(errors="replace"))


def test_an_hl7_sender_over_mllp_gets_acks_and_grades(tmp_path: Path) -> None:
    """A real `crsmon mllp` process on a free loopback port: AA, AE and AR
    answered over the socket; the records are graded in process."""
    url = f"sqlite:///{tmp_path / 'crsmon.sqlite3'}"
    from crsmon.db.migrate import upgrade

    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessions(engine)
    enrol(sessions)
    env = os.environ | {
        "CRSMON_DATABASE_URL": url,
        "CRSMON_HL7_FACILITIES": json.dumps([FACILITY]),
    }
    env.pop("CRSMON_BROKER_URL", None)
    log = tmp_path / "mllp.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", "from crsmon.cli import main; main()", "mllp",
             "--port", "0"],
            env=env, stderr=sink, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        port = wait_for_port(log, process, time.monotonic() + 60)
        when = dtm(at(26))
        good = oru(
            "TCP-1",
            obx(1, TEMP_F, "102.2", FAHR, when),
            obx(2, NIBP_SYS, "82", MMHG, when),
            obx(3, NIBP_DIA, "40", MMHG, when),
        )
        assert msa(mllp_send(port, good))[:2] == ["AA", "TCP-1"]
        bad = oru("TCP-2", obx(1, HR, "60~120", BPM, when))
        code, control, reason = msa(mllp_send(port, bad))[:3]
        assert (code, control) == ("AE", "TCP-2")
        assert "OBX[1]-5" in reason
        assert msa(mllp_send(port, oru("TCP-3", facility="ELSEWHERE")))[0] == "AR"
        assert max(grades(sessions).values()) == 2  # fever and hypotension
    finally:
        process.terminate()
        process.wait(timeout=30)
        engine.dispose()


def test_crsmon_ingest_hl7_reads_a_file_of_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    url = f"sqlite:///{tmp_path / 'crsmon.sqlite3'}"
    from crsmon.db.migrate import upgrade

    upgrade(url)
    engine = make_engine(url)
    enrol(make_sessions(engine))
    engine.dispose()
    monkeypatch.setenv("CRSMON_DATABASE_URL", url)
    monkeypatch.setenv("CRSMON_HL7_FACILITIES", json.dumps([FACILITY]))
    monkeypatch.delenv("CRSMON_BROKER_URL", raising=False)
    when = dtm(at(26))
    text = "\n".join(
        m.replace("\r", "\n")
        for m in (
            oru("F-1", obx(1, TEMP_F, "102.2", FAHR, when)),
            oru("F-2", obx(1, HR, "abc", BPM, when)),
        )
    )
    feed = tmp_path / "feed.hl7"
    feed.write_text(text)
    result = CliRunner().invoke(main, ["ingest", "--hl7", str(feed)])
    assert result.exit_code == 1, result.output
    assert "message 1: AA" in result.output
    assert "message 2: AE" in result.output
    assert "hl7: 1 AA, 1 AE;" in result.output
    engine = make_engine(url)
    with make_sessions(engine)() as session:
        kinds = set(session.scalars(select(Alert.kind)))
    engine.dispose()
    assert "crs_onset" in kinds


def test_a_message_of_two_patients_files_each_obx_with_its_own(
    hl7_sessions: sessionmaker[Session],
) -> None:
    """ORU^R01 may report several patients: each OBX belongs to the PID
    before it, and the second patient's fever never lands on the first."""
    now = datetime.now(UTC)
    record = {
        "kind": "patient", "source_system": "ehr", "source_record_id": "enrol-b",
        "patient": "P-HL7-B", "age_years": 9.0, "care_unit": "PICU",
        "infusion_at": INFUSION.isoformat(),
    }  # fmt: skip
    assert ingest_text(hl7_sessions, json.dumps(record), now=now, channel="t").status
    with hl7_sessions.begin() as session:
        link_patient(
            session, kind="identifier", ref="HOSP|MRN-0002", pseudonym="P-HL7-B",
            pepper=EMBEDDED_PEPPER, actor=Actor("test", "admin"), now=now,
        )  # fmt: skip
    when = dtm(at(20))
    first = oru("TWO-1", obx(1, TEMP_F, "98.6", FAHR, when))
    second = oru("x", obx(1, TEMP_F, "104.2", FAHR, when), mrn="MRN-0002")
    both = first + "\r".join(second.split("\r")[1:])  # PID B and its OBX appended
    answer = send(hl7_sessions, both)
    assert answer.code == "AA", answer.reason
    with hl7_sessions() as session:
        rows = session.execute(
            select(ClinicalRecord.patient_id, ClinicalRecord.value).where(
                ClinicalRecord.quantity == "temperature_c",
                ClinicalRecord.retracted_at.is_(None),
            )
        ).all()
    assert len(rows) == 2
    assert len({p for p, _ in rows}) == 2  # one each
    assert sorted(round(v or 0, 1) for _, v in rows) == [37.0, 40.1]


def test_corrections_out_of_order_and_repeated_obx(
    hl7_sessions: sessionmaker[Session],
) -> None:
    """F resent after its C is a duplicate; an F arriving after its C is kept,
    not graded; two OBX of one patient with one code, sub-id and time are AE;
    the time format does not change an OBX's identity."""
    when = dtm(at(20).replace(second=0))
    assert send(hl7_sessions, oru("O-1", obx(1, TEMP_F, "101.3", FAHR, when))).code == (
        "AA"
    )
    minutes = when[:12] + when[14:]  # the same time, written without seconds
    corrected = oru("O-2", obx(1, TEMP_F, "98.6", FAHR, minutes, status="C"))
    assert send(hl7_sessions, corrected).code == "AA"
    resent = send(hl7_sessions, oru("O-3", obx(1, TEMP_F, "101.3", FAHR, when)))
    assert resent.code == "AA"
    assert all(r.duplicate for r in resent.receipts)

    def temperatures() -> list[float]:
        with hl7_sessions() as session:
            return [
                round(v or 0, 1)
                for v in session.scalars(
                    select(ClinicalRecord.value).where(
                        ClinicalRecord.quantity == "temperature_c",
                        ClinicalRecord.retracted_at.is_(None),
                    )
                )
            ]

    assert temperatures() == [37.0]
    later = dtm(at(22))
    first_c = oru("O-4", obx(1, TEMP_F, "98.8", FAHR, later, status="C"))
    assert send(hl7_sessions, first_c).code == "AA"
    late_f = send(hl7_sessions, oru("O-5", obx(1, TEMP_F, "102.0", FAHR, later)))
    assert late_f.code == "AA"
    assert [n.code for n in late_f.receipts[0].notes] == ["superseded"]
    assert sorted(temperatures()) == [37.0, 37.1]
    twice = oru("O-6", obx(1, HR, "100", BPM, later), obx(2, HR, "140", BPM, later))
    answer = send(hl7_sessions, twice)
    assert answer.code == "AE"
    assert "OBX-4" in (answer.reason or "")


def test_obx_identities_are_keyed_and_acks_carry_reasons_in_msa_3(
    hl7_sessions: sessionmaker[Session],
) -> None:
    """No medical record number can be recovered from a stored identity by
    hashing guesses; an AR's reason is MSA-3 even without a control id."""
    import hashlib

    when = dtm(at(20))
    assert send(hl7_sessions, oru("K-1", obx(1, TEMP_F, "98.6", FAHR, when))).code == (
        "AA"
    )
    with hl7_sessions() as session:
        (identity,) = session.scalars(select(InboundItem.identity)).all()
    assert identity is not None
    for guess in (f"{FACILITY}|HOSP|{MRN}", MRN, f"HOSP|{MRN}"):
        unkeyed = hashlib.sha256(guess.encode()).hexdigest()[:40]
        assert unkeyed not in identity
    assert MRN not in identity
    no_control = oru("", obx(1, TEMP_F, "98.6", FAHR, when))
    answer = send(hl7_sessions, no_control)
    assert answer.code == "AR"
    fields = msa(answer.ack)
    assert fields[0] == "AR"
    assert "MSH-10" in fields[2]
    garbage = send(hl7_sessions, "not hl7 at all")
    assert "MSH" in msa(garbage.ack)[2]
