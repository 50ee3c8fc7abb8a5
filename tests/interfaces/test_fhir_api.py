"""End to end: FHIR R4 resources over HTTP in, records, grades and alerts out.

HL7's US Core examples are posted unchanged; the other resources are built
for each case of docs/interfaces.md. Every reply is checked to be a valid R4
OperationOutcome (or Bundle) with the fhir.resources models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from api_feed import TestClient, at, count, enrolment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir_build import (
    administration,
    blood_pressure,
    bundle,
    device,
    example,
    observation,
    quantity,
    spo2_with_flow,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.auth.keys import EMBEDDED_PEPPER
from crsmon.db.audit import Actor
from crsmon.db.models import ClinicalRecord, InboundItem
from crsmon.services.interfaces import link_patient

pytest_plugins = ("api_fixtures",)

FHIR = {"content-type": "application/fhir+json"}
PATIENT = "P-FHIR"


def enrol(
    client: TestClient,
    sessions: sessionmaker[Session],
    patient: str = PATIENT,
    ref: str = "Patient/example",
    **fields: Any,
) -> None:
    """Enrol ``patient`` and link the site's reference to it."""
    answer = client.post("/v1/records", json=enrolment(patient, **fields))
    assert answer.status_code == 201, answer.text
    with sessions.begin() as session:
        link_patient(
            session,
            kind="reference",
            ref=ref,
            pseudonym=patient,
            pepper=EMBEDDED_PEPPER,
            actor=Actor("test", "admin"),
            now=datetime.now(UTC),
        )


def post(client: TestClient, resource: dict[str, Any]) -> Any:
    path = (
        "/fhir"
        if resource["resourceType"] == "Bundle"
        else (f"/fhir/{resource['resourceType']}")
    )
    answer = client.post(path, json=resource, headers=FHIR)
    assert answer.headers["content-type"].startswith("application/fhir+json")
    return answer


def issues(answer: Any) -> list[tuple[str, str, str]]:
    """(severity, crsmon note code, element) of a valid OperationOutcome."""
    body = OperationOutcome.model_validate(answer.json())
    found = []
    for issue in body.issue:
        details = issue.details
        coding = [] if details is None else details.coding or []
        code = str(coding[0].code) if coding else ""
        where = str(issue.expression[0]) if issue.expression else ""
        found.append((str(issue.severity), code, where))
    return found


def grades(client: TestClient, patient: str = PATIENT) -> dict[float, int]:
    items = client.get(f"/v1/patients/{patient}/grades").json()["items"]
    return {g["t_hours"]: g["grade"] for g in items}


def items(sessions: sessionmaker[Session]) -> list[InboundItem]:
    with sessions() as session:
        return list(session.scalars(select(InboundItem).order_by(InboundItem.id)))


US_CORE_1999 = (
    "blood-pressure",
    "bp-data-absent",
    "heart-rate",
    "oxygen-saturation",
    "respiratory-rate",
    "temperature",
    "weight",
)


def test_the_us_core_examples_dated_1999_are_kept_with_their_precision(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """Date-only examples: 201, kept with day precision, never graded; the
    absent diastolic stays absent; body weight is unmapped and reported."""
    enrol(client, db_sessions, infusion_at="1999-07-01T08:00:00+00:00")
    for name in US_CORE_1999:
        answer = post(client, example(name))
        assert answer.status_code == 201, (name, answer.text)
        found = issues(answer)
        assert ("warning", "date-only", "Observation.effectiveDateTime") in found
        if name == "bp-data-absent":
            absent = (
                "information",
                "absent",
                "Observation.component[1].dataAbsentReason",
            )
            assert absent in found
        if name == "weight":
            assert ("warning", "code-unmapped", "Observation.code") in found
    kept = items(db_sessions)
    assert [i.identity for i in kept] == [f"Observation/{n}" for n in US_CORE_1999]
    assert {i.disposition for i in kept} == {"not_graded"}
    assert {i.values["precision"] for i in kept} == {"day"}
    bp_item = next(i for i in kept if i.identity == "Observation/bp-data-absent")
    assert bp_item.values["values"] == [
        {"concept": "sbp_mmhg", "element": "Observation.component[0].valueQuantity",
         "value": 109.0, "sent": 109.0, "unit": "mm[Hg]"},
        {"concept": "dbp_mmhg", "element": "Observation.component[1].dataAbsentReason",
         "absent": "unknown"},
    ]  # fmt: skip
    temp_item = next(i for i in kept if i.identity == "Observation/temperature")
    assert "Amy Shaw" not in temp_item.payload  # the patient's name is not kept
    assert "Patient/example" not in temp_item.payload
    assert count(db_sessions, ClinicalRecord) == 0
    assert grades(client) == {}
    again = post(client, example("heart-rate"))
    assert again.status_code == 200
    assert ("information", "duplicate", "") in issues(again)
    assert len(items(db_sessions)) == len(US_CORE_1999)


def test_us_core_spo2_with_6_l_min_and_no_device_is_graded_as_a_nasal_cannula(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """satO2-fiO2: 95 % on 6 L/min (the low-flow boundary), no device: graded
    as a nasal cannula <= 6 L/min (grade 2 with fever), flagged."""
    enrol(client, db_sessions, infusion_at="2014-12-04T09:00:00+00:00")
    fever = observation("t-1", "8310-5", "2014-12-05T09:30:10+01:00", 101.3, "[degF]")
    assert post(client, fever).status_code == 201
    answer = post(client, example("observation-satO2-fiO2"))
    assert answer.status_code == 201, answer.text
    assert (
        "warning",
        "device-not-recorded",
        "Observation.component[0].valueQuantity",
    ) in issues(answer)
    with db_sessions() as session:
        oxygen = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.kind == "oxygen")
        ).one()
        temp = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.quantity == "temperature_c")
        ).one()
    assert oxygen.details["device"] == "nasal_cannula"
    assert oxygen.details["flow_l_min"] == 6.0
    assert [f["code"] for f in oxygen.quality_flags] == ["device_not_recorded"]
    assert temp.value == pytest.approx(38.5)  # 101.3 [degF]
    assert temp.details == {"original_value": 101.3, "original_unit": "[degF]"}
    assert max(grades(client).values()) == 2


def test_fever_in_fahrenheit_then_entered_in_error_withdraws_the_grade(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """A fever in [degF] grades 1 and opens an alert; the same resource sent
    again as entered-in-error retracts it and the grade goes."""
    enrol(client, db_sessions)
    fever = observation("t-9", "8310-5", at(20), 102.2, "[degF]")  # 39.0 Cel
    assert post(client, fever).status_code == 201
    assert grades(client) == {20.0: 1}
    onset = client.get("/v1/alerts", params={"kind": "crs_onset"}).json()["items"]
    assert [(a["patient"], a["grade"]) for a in onset] == [(PATIENT, 1)]
    error = fever | {"status": "entered-in-error"}
    answer = post(client, error)
    assert answer.status_code == 201, answer.text
    assert items(db_sessions)[-1].disposition == "retraction"
    assert grades(client).get(20.0, 0) == 0
    with db_sessions() as session:
        row = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.quantity == "temperature_c")
        ).one()
    assert row.retracted_at is not None
    assert "entered in error" in (row.retraction_reason or "")


def test_running_norepinephrine_plus_vasopressin_is_grade_3_not_4(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """In-progress with an open period is a running infusion; vasopressin is
    not counted as a second vasopressor (grade 3); completed ends it."""
    enrol(client, db_sessions)
    sent = [
        observation("t-1", "8310-5", at(20), 39.2, "Cel"),
        blood_pressure("bp-1", at(21), 78, 40),
        administration("ne", "7512", status="in-progress", start=at(22),
                       rate=(0.1, "ug/kg/min")),
        administration("avp", "11149", status="in-progress", start=at(23)),
        blood_pressure("bp-2", at(24), 86, 44),
    ]  # fmt: skip
    for resource in sent:
        assert post(client, resource).status_code == 201
    by_time = grades(client)
    assert by_time[21.0] == 2
    assert by_time[24.0] == 3
    with db_sessions() as session:
        starts = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.kind == "vasopressor_start")
        ).all()
    assert sorted((s.details["drug"], s.details["dose"]) for s in starts) == [
        ("norepinephrine", 0.1),
        ("vasopressin", None),  # no rate sent: ASTCT counts agents
    ]
    stopped = administration(
        "ne", "7512", status="completed", start=at(22), end=at(30),
        rate=(0.1, "ug/kg/min"),
    )  # fmt: skip
    assert post(client, stopped).status_code == 201
    with db_sessions() as session:
        stops = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.kind == "vasopressor_stop")
        ).all()
    assert len(stops) == 1


def test_hfnc_at_8_l_min_through_3151_8_and_the_device_in_one_bundle(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """A batch Bundle: SpO2 with 8 L/min (3151-8) and the device (107117-4,
    HFNC) at the same time: the flow is graded with its device, grade 3."""
    enrol(client, db_sessions)
    sent = bundle(
        "batch",
        observation("t-1", "8310-5", at(30), 39.0, "Cel"),
        spo2_with_flow("sp-1", at(31), 93, 8),
        device("dev-1", at(31), "High flow nasal cannula"),
    )
    answer = post(client, sent)
    assert answer.status_code == 200, answer.text
    reply = Bundle.model_validate(answer.json())
    assert reply.type == "batch-response"
    answered = [e.response for e in reply.entry or []]
    assert [a.status for a in answered if a is not None] == ["201 Created"] * 3
    with db_sessions() as session:
        oxygen = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.kind == "oxygen")
        ).all()
    assert {(o.details["device"], o.details["flow_l_min"]) for o in oxygen} == {
        ("high_flow_nasal_cannula", 8.0),
        ("high_flow_nasal_cannula", None),
    }
    assert all(o.quality_flags == [] for o in oxygen)
    assert grades(client)[31.0] == 3


def test_a_batch_answers_per_entry_and_a_transaction_is_all_or_nothing(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    enrol(client, db_sessions)
    good = observation("t-1", "8310-5", at(20), 38.4, "Cel")
    bad_unit = observation("t-2", "8310-5", at(21), 38.4, "K")
    broken = {"resourceType": "Observation", "status": 7}
    batch = post(client, bundle("batch", good, bad_unit, broken))
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "400 Bad Request"]
    unit_issue = batch.json()["entry"][1]["response"]["outcome"]["issue"]
    assert any(
        i["severity"] == "error"
        and i["expression"] == ["Observation.valueQuantity.code"]
        for i in unit_issue
    )
    assert "38.4" not in batch.text  # submitted values are never echoed
    before = count(db_sessions, ClinicalRecord)
    other = observation("t-3", "8310-5", at(22), 38.1, "Cel")
    transaction = post(client, bundle("transaction", other, broken))
    assert transaction.status_code == 400
    found = issues(transaction)
    assert ("error", "structure", "Bundle.entry[1].resource.code") in found
    assert ("error", "transaction", "Bundle") in found
    assert count(db_sessions, ClinicalRecord) == before
    assert items(db_sessions)[-1].disposition == "refused"  # kept for review


def test_status_unit_patient_and_code_rules(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """Preliminary is kept, flagged, not graded; amended replaces the earlier
    version; an unknown unit, an unlinked patient and an unknown device are
    refused (422, kept); an unknown code is kept and reported."""
    enrol(client, db_sessions)
    preliminary = observation(
        "t-1", "8310-5", at(20), 39.5, "Cel", status="preliminary"
    )
    answer = post(client, preliminary)
    assert answer.status_code == 201
    assert ("warning", "status-not-graded", "Observation.status") in issues(answer)
    assert count(db_sessions, ClinicalRecord) == 0
    final = observation("t-2", "8310-5", at(21), 39.5, "Cel")
    assert post(client, final).status_code == 201
    assert grades(client) == {21.0: 1}
    amended = observation("t-2", "8310-5", at(21), 37.1, "Cel", status="amended")
    assert post(client, amended).status_code == 201
    assert grades(client).get(21.0, 0) == 0
    with db_sessions() as session:
        live = session.scalars(
            select(ClinicalRecord.value).where(
                ClinicalRecord.retracted_at.is_(None),
                ClinicalRecord.kind == "measurement",
            )
        ).all()
    assert live == [37.1]  # the amended value replaced the first
    kelvin = post(client, observation("t-3", "8310-5", at(22), 312, "K"))
    assert kelvin.status_code == 422
    assert ("error", "unit", "Observation.valueQuantity.code") in issues(kelvin)
    stranger = observation("t-4", "8310-5", at(22), 39, "Cel", subject="Patient/other")
    unlinked = post(client, stranger)
    assert unlinked.status_code == 422
    assert ("error", "patient-unlinked", "Observation.subject") in issues(unlinked)
    vague = post(client, device("d-1", at(22), "oxygen somehow"))
    assert vague.status_code == 422
    assert ("error", "device-unmapped", "Observation.value") in issues(vague)
    unknown = post(client, observation("t-5", "8302-2", at(22), 130, "cm"))
    assert unknown.status_code == 201
    assert ("warning", "code-unmapped", "Observation.code") in issues(unknown)
    dispositions = [i.disposition for i in items(db_sessions)]
    assert dispositions == [
        "not_graded", "graded", "graded", "refused", "refused", "refused", "not_graded"
    ]  # fmt: skip


def test_fhir_intake_is_scoped_and_needs_a_bedside_key(
    make_client: Any, db_sessions: sessionmaker[Session]
) -> None:
    """A reviewer key is refused (403); no key is 401."""
    client = make_client()
    enrol(client, db_sessions)
    fever = observation("t-1", "8310-5", at(20), 39.0, "Cel")
    anonymous = client.post(
        "/fhir/Observation", json=fever, headers=FHIR | {"Authorization": ""}
    )
    assert anonymous.status_code == 401
    reviewer = client.keys["reviewer"]
    refused = client.post(
        "/fhir/Observation",
        json=fever,
        headers=FHIR | {"Authorization": f"Bearer {reviewer}"},
    )
    assert refused.status_code == 403


def test_the_bp_panel_in_kpa_and_a_date_only_medication(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """kPa converts to mm[Hg]; a vasopressor given at an instant (no period)
    is kept, not graded, and says why."""
    enrol(client, db_sessions)
    bp = observation(
        "bp-k", "85354-9", at(20),
        component=[
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": quantity(12, "kPa")},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": quantity(8, "kPa")},
        ],
    )  # fmt: skip
    assert post(client, bp).status_code == 201
    with db_sessions() as session:
        sbp = session.scalar(
            select(ClinicalRecord.value).where(ClinicalRecord.quantity == "sbp_mmhg")
        )
    assert sbp == pytest.approx(90.00744)
    instant = {
        "resourceType": "MedicationAdministration",
        "id": "ne-synthea",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [
                {"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                 "code": "242969"}
            ]
        },
        "subject": {"reference": "Patient/example"},
        "effectiveDateTime": at(25),
    }  # fmt: skip
    answer = post(client, instant)
    assert answer.status_code == 201
    assert (
        "warning",
        "no-period",
        "MedicationAdministration.effectiveDateTime",
    ) in issues(answer)
    kept = items(db_sessions)[-1]
    assert kept.values.get("administration") is None
    assert kept.disposition == "not_graded"
    tocilizumab = {
        "resourceType": "MedicationAdministration",
        "id": "toci",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [
                {"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                 "code": "612865"}
            ]
        },
        "subject": {"reference": "Patient/example"},
        "effectiveDateTime": at(26),
    }  # fmt: skip
    assert post(client, tocilizumab).status_code == 201
    with db_sessions() as session:
        given = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.kind == "treatment")
        ).one()
    assert given.details == {"drug": "tocilizumab"}


def test_a_transaction_with_an_entry_the_intake_would_refuse_stores_nothing(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """All or nothing also past reading: an unknown unit, an unlinked patient
    or a value beyond its plausibility limit in one entry stores no entry, and
    the reply names each failing entry; the same entries as a batch are
    answered one by one."""
    enrol(client, db_sessions)
    good = observation("t-1", "8310-5", at(20), 39.1, "Cel")
    kelvin = observation("t-2", "8310-5", at(21), 312, "K")
    stranger = observation("t-3", "8310-5", at(21), 39, "Cel", subject="Patient/x")
    too_much = spo2_with_flow("sp-1", at(22), 93, 90)  # 90 L/min: beyond 80
    answer = post(client, bundle("transaction", good, kelvin, stranger, too_much))
    assert answer.status_code == 400, answer.text
    found = issues(answer)
    assert ("error", "structure", "Bundle.entry[1].resource.valueQuantity.code") in (
        found
    )
    assert ("error", "structure", "Bundle.entry[2].resource.subject") in found
    flow = "Bundle.entry[3].resource.component[0].valueQuantity"
    assert ("error", "structure", flow) in found  # the flow_l_min refused
    assert ("error", "transaction", "Bundle") in found
    assert count(db_sessions, ClinicalRecord) == 0
    assert grades(client) == {}
    kept = items(db_sessions)
    assert [(i.resource_type, i.disposition) for i in kept] == [("Bundle", "refused")]
    assert "Patient/x" not in kept[0].payload
    batch = post(client, bundle("batch", good, too_much))
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity"]
    assert grades(client) == {20.0: 1}


def test_a_resource_is_taken_whole_or_not_at_all(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """SpO2 with an implausible flow component: neither the SpO2 nor the
    oxygen record is stored; the reply names the feed field refused."""
    enrol(client, db_sessions)
    answer = post(client, spo2_with_flow("sp-9", at(22), 93, 90))
    assert answer.status_code == 422, answer.text
    refused = [i for i in answer.json()["issue"] if i["severity"] == "error"]
    assert any("flow_l_min" in i["details"]["text"] for i in refused)
    assert count(db_sessions, ClinicalRecord) == 0
    assert items(db_sessions)[-1].disposition == "refused"
    assert items(db_sessions)[-1].record_keys == []


def live_values(sessions: sessionmaker[Session], quantity: str) -> list[float]:
    with sessions() as session:
        return list(
            session.scalars(
                select(ClinicalRecord.value).where(
                    ClinicalRecord.quantity == quantity,
                    ClinicalRecord.retracted_at.is_(None),
                )
            )
        )


def test_versions_arrive_out_of_order(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """An older version resent after its amendment is a duplicate, never a
    replacement; an original arriving after its correction is kept, not graded."""
    enrol(client, db_sessions)
    first = observation("t-1", "8310-5", at(20), 39.5, "Cel")
    amended = observation("t-1", "8310-5", at(20), 37.2, "Cel", status="amended")
    assert post(client, first).status_code == 201
    assert post(client, amended).status_code == 201
    again = post(client, first)  # a resend of the original, after the amendment
    assert again.status_code == 200
    assert live_values(db_sessions, "temperature_c") == [37.2]
    corrected = observation("t-2", "8310-5", at(22), 37.0, "Cel", status="corrected")
    late = observation("t-2", "8310-5", at(22), 39.0, "Cel")
    assert post(client, corrected).status_code == 201
    answer = post(client, late)
    assert answer.status_code == 201
    assert ("warning", "superseded", "status") in issues(answer)
    assert sorted(live_values(db_sessions, "temperature_c")) == [37.0, 37.2]
    assert max(grades(client).values()) == 0


def test_an_amendment_naming_another_patient_moves_the_value(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    enrol(client, db_sessions)
    enrol(client, db_sessions, patient="P-OTHER", ref="Patient/other")
    wrong = observation("t-1", "8310-5", at(20), 39.5, "Cel")
    assert post(client, wrong).status_code == 201
    assert grades(client) == {20.0: 1}
    moved = wrong | {"status": "amended", "subject": {"reference": "Patient/other"}}
    assert post(client, moved).status_code == 201
    assert grades(client).get(20.0, 0) == 0  # withdrawn from the first patient
    assert grades(client, "P-OTHER") == {20.0: 1}


def test_bounds_values_with_absent_reasons_and_bare_retractions(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """A comparator is a bound (kept, not graded); a value with a
    dataAbsentReason is refused (obs-6); an entered-in-error with no value
    still retracts."""
    enrol(client, db_sessions)
    below = observation("t-1", "8310-5", at(20), 38.0, "Cel")
    below["valueQuantity"]["comparator"] = "<"
    answer = post(client, below)
    assert answer.status_code == 201
    assert ("warning", "comparator", "Observation.valueQuantity.comparator") in (
        issues(answer)
    )
    both = observation("t-2", "8310-5", at(20), 39.8, "Cel")
    both["dataAbsentReason"] = {"coding": [{"code": "unknown"}]}
    answer = post(client, both)
    assert answer.status_code == 422
    assert ("error", "value-and-absent", "Observation.dataAbsentReason") in (
        issues(answer)
    )
    fever = observation("t-3", "8310-5", at(21), 39.1, "Cel")
    assert post(client, fever).status_code == 201
    assert grades(client) == {21.0: 1}
    bare = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:test", "value": "t-3"}],
        "status": "entered-in-error",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": "Patient/example"},
    }
    assert post(client, bare).status_code == 201
    assert grades(client).get(21.0, 0) == 0


def test_oxygen_flows_without_a_device(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """0 L/min is room air, never hypoxia; a flow sent without a device while
    a recorded device is current is graded with that device, not a cannula."""
    enrol(client, db_sessions)
    assert post(client, observation("t-1", "8310-5", at(20), 39.0, "Cel")).is_success
    zero = post(client, spo2_with_flow("s-0", at(21), 98, 0))
    assert ("information", "flow-zero", "Observation.component[0].valueQuantity") in (
        issues(zero)
    )
    assert grades(client)[21.0] == 1
    assert post(client, device("d-1", at(22), "CPAP")).status_code == 201
    assert grades(client)[22.0] == 4
    later = post(client, spo2_with_flow("s-1", at(22.5), 92, 4))
    assert (
        "information",
        "device-current",
        "Observation.component[0].valueQuantity",
    ) in (issues(later))
    assert grades(client)[22.5] == 4  # still CPAP, not a cannula at 4 L/min


def test_infusions_not_done_on_hold_and_ending_before_they_start(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    enrol(client, db_sessions)
    for resource in (
        observation("t-1", "8310-5", at(20), 39.2, "Cel"),
        blood_pressure("bp-1", at(20.5), 70, 40),
    ):
        assert post(client, resource).status_code == 201
    running = administration("ne", "7512", status="in-progress", start=at(21))
    assert post(client, running).status_code == 201
    assert grades(client)[21.0] == 3
    never = administration("ne", "7512", status="not-done", start=at(21))
    assert post(client, never).status_code == 201  # it was not given after all
    assert grades(client).get(21.0) == 2
    epi = administration("epi", "3992", status="in-progress", start=at(23))
    assert post(client, epi).status_code == 201
    held = administration("epi", "3992", status="on-hold", start=at(23))
    assert post(client, held).status_code == 422  # on hold: when did it stop?
    paused = administration("epi", "3992", status="on-hold", start=at(23), end=at(24))
    assert post(client, paused).status_code == 201
    with db_sessions() as session:
        stops = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.kind == "vasopressor_stop")
        ).all()
    assert len(stops) == 1
    backwards = administration(
        "dop", "3628", status="stopped", start=at(25), end=at(24)
    )
    answer = post(client, backwards)
    assert answer.status_code == 422
    assert (
        "error",
        "end-before-start",
        "MedicationAdministration.effectivePeriod.end",
    ) in (issues(answer))


def test_a_transaction_with_two_versions_of_one_resource_is_refused(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    enrol(client, db_sessions)
    sent = bundle(
        "transaction",
        administration("ne", "7512", status="in-progress", start=at(21)),
        administration("ne", "7512", status="completed", start=at(21), end=at(22)),
    )
    answer = post(client, sent)
    assert answer.status_code == 400
    assert ("error", "structure", "Bundle.entry[1].resource") in issues(answer)
    assert count(db_sessions, ClinicalRecord) == 0


def test_the_kept_payload_holds_only_what_crsmon_reads(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """An allowlist: performer, encounter, focus, extensions, notes and free
    text are never kept (any of them may name the patient)."""
    enrol(client, db_sessions)
    sent = observation("t-1", "8310-5", at(20), 38.2, "Cel") | {
        "performer": [{"reference": "Patient/example", "display": "Amy Shaw"}],
        "encounter": {"reference": "Encounter/77", "display": "Amy Shaw ward 4"},
        "focus": [{"reference": "Patient/example"}],
        "extension": [{"url": "urn:x", "valueString": "MRN ZZCANARY8841"}],
        "note": [{"text": "Amy Shaw says she feels warm"}],
    }
    sent["code"]["text"] = "temperature of Amy Shaw"
    assert post(client, sent).status_code == 201
    payload = items(db_sessions)[-1].payload
    for leak in ("Amy", "Shaw", "ZZCANARY8841", "Patient/example", "Encounter/77"):
        assert leak not in payload
    assert '"valueQuantity"' in payload
    assert '"8310-5"' in payload
