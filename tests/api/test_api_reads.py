"""Reading over HTTP on each database: patients, grade timelines, alerts, acks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from api_feed import PATIENT, TestClient, at, enrolment, escalating, record, vitals

pytest_plugins = ("api_fixtures",)


def send(client: TestClient, *records: dict[str, Any]) -> None:
    for body in records:
        reply = client.post("/v1/records", json=body)
        assert reply.status_code == 201, reply.text


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_patients_are_listed_by_page_and_read_one_by_one(client: TestClient) -> None:
    """Pagination in enrolment order; the detail shows where monitoring stands."""
    send(client, *escalating())
    send(client, enrolment("P-0002"), enrolment("P-0003", product=None))
    page = client.get("/v1/patients", params={"limit": 2}).json()
    assert page["total"] == 3
    assert [p["pseudonym"] for p in page["items"]] == [PATIENT, "P-0002"]
    rest = client.get("/v1/patients", params={"limit": 2, "offset": 2}).json()
    assert [p["pseudonym"] for p in rest["items"]] == ["P-0003"]
    assert rest["items"][0]["product"] is None
    assert rest["items"][0]["current_grade"] is None
    beyond = client.get("/v1/patients", params={"offset": 5}).json()
    assert (beyond["items"], beyond["total"]) == ([], 3)

    one = client.get(f"/v1/patients/{PATIENT}").json()
    assert one == page["items"][0]
    assert one["baseline"]["age_years_at_infusion"] == 9.0
    assert one["product"]["name"] == "tisagenlecleucel"
    assert one["care_unit"] == "PICU"
    assert parse(one["infusion_at"]) == parse(at(0))
    assert parse(one["last_vitals_at"]) == parse(at(33))
    assert (one["current_grade"], one["max_grade"]) == (3, 3)
    assert parse(one["current_grade_at"]) == parse(at(33))
    assert one["open_alerts"] >= 3  # onset, escalations, severe CRS, gaps


def test_an_unknown_patient_is_404_without_echo(client: TestClient) -> None:
    """The pseudonym sent is not repeated back; a malformed one is 422."""
    missing = client.get("/v1/patients/P-nobody-zz")
    assert missing.status_code == 404
    assert missing.json()["detail"][0]["field"] == "pseudonym"
    assert "P-nobody-zz" not in missing.text
    assert client.get("/v1/patients/P-nobody-zz/grades").status_code == 404
    assert client.get("/v1/patients/bad%20name").status_code == 422


def test_the_grade_timeline_keeps_re_derivations_behind_all(
    client: TestClient,
) -> None:
    """A retraction re-derives grades; the default view shows the current row."""
    send(client, *escalating())
    before = client.get(f"/v1/patients/{PATIENT}/grades").json()
    assert before["rule_set"] == "astct-2019"
    grades = {g["t_hours"]: g for g in before["items"]}
    assert [grades[t]["grade"] for t in (20, 26, 32, 33)] == [1, 2, 3, 3]
    assert all(g["rule_set_version"] and g["reasons"] for g in before["items"])
    assert "oxygen" in grades[20]["missing_inputs"]

    retract = record("retraction", 5, at=at(40), target_record_id="m-3", reason="bed")
    send(client, retract)
    current = client.get(f"/v1/patients/{PATIENT}/grades").json()["items"]
    times = [g["evaluated_at"] for g in current]
    assert times == sorted(set(times))  # one row per time
    assert not any(g["superseded"] for g in current)
    assert {g["t_hours"]: g["grade"] for g in current}[32] < 3

    every = client.get(f"/v1/patients/{PATIENT}/grades", params={"all": "true"})
    rows = every.json()["items"]
    old = [g for g in rows if g["superseded"]]
    assert len(rows) == len(current) + len(old)
    assert {g["t_hours"]: g["grade"] for g in old}[32] == 3
    assert client.get(f"/v1/patients/{PATIENT}").json()["max_grade"] == 2
    other = client.get(
        f"/v1/patients/{PATIENT}/grades", params={"rule_set": "astct-2019+x=y"}
    )
    assert other.json()["items"] == []


def test_alerts_are_filtered_by_each_parameter(client: TestClient) -> None:
    """Status, kind, patient, time window and minimum grade narrow the list."""
    send(client, *escalating())
    send(
        client, enrolment("P-0002"), vitals(9, 25, patient="P-0002", temperature_c=41.8)
    )
    everything = client.get("/v1/alerts").json()
    alerts = everything["items"]
    assert everything["total"] == len(alerts) > 4
    triggered = [parse(a["triggered_at"]) for a in alerts]
    assert triggered == sorted(triggered, reverse=True)

    def ids(**params: Any) -> set[int]:
        reply = client.get("/v1/alerts", params=params)
        assert reply.status_code == 200, reply.text
        return {a["id"] for a in reply.json()["items"]}

    def where(test: Any) -> set[int]:
        return {a["id"] for a in alerts if test(a)}

    assert ids(kind="crs_onset") == where(lambda a: a["kind"] == "crs_onset")
    assert ids(patient="P-0002") == where(lambda a: a["patient"] == "P-0002")
    assert where(lambda a: a["kind"] == "data_quality") <= ids(patient="P-0002")
    assert ids(patient="P-unknown") == set()
    severe = where(lambda a: a["grade"] is not None and a["grade"] >= 2)
    assert ids(min_grade=2) == severe
    assert severe
    since, until = parse(at(25)), parse(at(32))
    inside = where(lambda a: since <= parse(a["triggered_at"]) < until)
    assert inside  # the escalation to grade 2 at 26 h
    assert ids(since=at(25), until=at(32)) == inside
    before = where(lambda a: parse(a["triggered_at"]) < parse(at(20)))
    assert ids(until=at(20)) == before
    assert ids(status="open") == {a["id"] for a in alerts}
    assert ids(status="acknowledged") == set()
    page = client.get("/v1/alerts", params={"limit": 2, "offset": 1}).json()
    assert [a["id"] for a in page["items"]] == [a["id"] for a in alerts[1:3]]
    assert page["total"] == everything["total"]


def test_an_alert_is_acknowledged_once(client: TestClient) -> None:
    """Who, when (server UTC) and why are kept; a second acknowledgement is 409."""
    send(client, *escalating())
    (onset,) = client.get("/v1/alerts", params={"kind": "crs_onset"}).json()["items"]
    open_before = client.get(f"/v1/patients/{PATIENT}").json()["open_alerts"]
    url = f"/v1/alerts/{onset['id']}/acknowledge"
    acked = client.post(url, json={"by": "dr-lee", "note": "seen, on rounds"})
    assert acked.status_code == 200
    body = acked.json()
    assert body["status"] == "acknowledged"
    assert (body["acknowledged_by"], body["acknowledgement_note"]) == (
        "dr-lee",
        "seen, on rounds",
    )
    assert datetime.now(UTC) - parse(body["acknowledged_at"]) < timedelta(minutes=1)
    again = client.post(url, json={"by": "dr-kim"})
    assert again.status_code == 409
    assert again.json()["detail"][0]["field"] == "status"
    listed = client.get("/v1/alerts", params={"status": "acknowledged"}).json()
    assert [a["id"] for a in listed["items"]] == [onset["id"]]
    assert listed["items"][0]["acknowledged_by"] == "dr-lee"
    assert client.get(f"/v1/patients/{PATIENT}").json()["open_alerts"] == (
        open_before - 1
    )
    missing = client.post("/v1/alerts/999999/acknowledge", json={"by": "dr-lee"})
    assert missing.status_code == 404


def test_bad_parameters_are_422_without_echo(client: TestClient) -> None:
    """Query and body errors name the parameter, never the value sent."""
    cases = [
        ("get", "/v1/alerts", {"min_grade": "zz-secret"}, None, "min_grade"),
        ("get", "/v1/alerts", {"since": "2026-01-01T10:11:12.345"}, None, "since"),
        ("get", "/v1/alerts", {"kind": "zz-secret"}, None, "kind"),
        ("get", "/v1/patients", {"limit": 0}, None, "limit"),
        ("post", "/v1/alerts/1/acknowledge", None, {"by": " "}, "by"),
        ("post", "/v1/alerts/1/acknowledge", None, {"by": "a", "zz": 1}, "zz"),
    ]
    for method, url, params, body, field in cases:
        reply = client.request(method, url, params=params, json=body)
        assert reply.status_code == 422, (url, params, body)
        assert [d["field"] for d in reply.json()["detail"]] == [field]
        assert "zz-secret" not in reply.text
        assert "10:11:12.345" not in reply.text
