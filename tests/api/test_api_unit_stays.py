"""Transfers and discharges over HTTP, and the patient's unit stays read back."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from api_feed import PATIENT, TestClient, at, enrolment, record

pytest_plugins = ("api_fixtures",)

NDJSON = {"content-type": "application/x-ndjson"}


def post(client: TestClient, body: dict[str, Any], status: int = 201) -> None:
    reply = client.post("/v1/records", json=body)
    assert reply.status_code == status, reply.text


def stays(patient: dict[str, Any]) -> list[tuple[str, datetime, datetime | None]]:
    return [
        (
            s["care_unit"],
            datetime.fromisoformat(s["from_at"]),
            None if s["to_at"] is None else datetime.fromisoformat(s["to_at"]),
        )
        for s in patient["unit_stays"]
    ]


def t(hours: float) -> datetime:
    return datetime.fromisoformat(at(hours))


def test_transfer_discharge_and_readmission_read_back(client: TestClient) -> None:
    """The patient shows the open unit, the discharge and every stay in order."""
    post(client, enrolment())
    one = client.get(f"/v1/patients/{PATIENT}").json()
    assert (one["care_unit"], one["discharged_at"]) == ("PICU", None)
    assert stays(one) == [("PICU", t(0), None)]

    post(client, record("transfer", 1, transferred_at=at(20), care_unit="WARD"))
    lines = [
        record("discharge", 2, discharged_at=at(40), destination="home"),
        record("transfer", 3, transferred_at=at(10), care_unit="ICU"),  # late
    ]
    body = "\n".join(json.dumps(line) for line in lines).encode()
    batch = client.post("/v1/records/batch", content=body, headers=NDJSON)
    assert batch.is_success, batch.text
    assert batch.json()["counts"]["stored"] == 2

    one = client.get(f"/v1/patients/{PATIENT}").json()
    assert one["care_unit"] is None
    assert datetime.fromisoformat(one["discharged_at"]) == t(40)
    assert stays(one) == [
        ("PICU", t(0), t(10)),
        ("ICU", t(10), t(20)),
        ("WARD", t(20), t(40)),
    ]
    page = client.get("/v1/patients").json()
    assert page["items"] == [one]

    post(client, record("transfer", 4, transferred_at=at(60), care_unit="PICU"))
    post(client, record("transfer", 4, transferred_at=at(60), care_unit="PICU"), 200)
    one = client.get(f"/v1/patients/{PATIENT}").json()
    assert (one["care_unit"], one["discharged_at"]) == ("PICU", None)
    assert stays(one)[-1] == ("PICU", t(60), None)


def test_a_retracted_transfer_leaves_the_stays(client: TestClient) -> None:
    post(client, enrolment())
    post(client, record("transfer", 1, transferred_at=at(20), care_unit="WARD"))
    retraction = record(
        "retraction", 2, at=at(21), target_record_id="m-1", reason="wrong patient"
    )
    post(client, retraction)
    one = client.get(f"/v1/patients/{PATIENT}").json()
    assert (one["care_unit"], stays(one)) == ("PICU", [("PICU", t(0), None)])


def test_a_bad_transfer_or_discharge_is_422_naming_the_field(
    client: TestClient,
) -> None:
    post(client, enrolment())
    naive = record("transfer", 1, transferred_at="2025-03-02T10:00:00", care_unit="X")
    empty = record("transfer", 2, transferred_at=at(5), care_unit="")
    where = record("discharge", 3, discharged_at=at(5), destination="ward")
    for body, field in [
        (naive, "transferred_at"),
        (empty, "care_unit"),
        (where, "destination"),
    ]:
        reply = client.post("/v1/records", json=body)
        assert reply.status_code == 422, reply.text
        assert [p["field"] for p in reply.json()["detail"]] == [field]
    one = client.get(f"/v1/patients/{PATIENT}").json()
    assert stays(one) == [("PICU", t(0), None)]
