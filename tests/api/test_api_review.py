"""The safety reviewer's routes over HTTP, on each database: who is on
monitoring now, open alerts by age, a patient's timeline (JSON and PNG) and
adjudication of the computed maximum grade.

Patients are built through the real intake (``/v1/records``), graded in process.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from api_feed import (
    INFUSION,
    PATIENT,
    TestClient,
    at,
    count,
    enrolment,
    escalating,
    record,
    vitals,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.models import Adjudication, Grade, Patient
from crsmon.services.review import EVENT_KINDS, EventKind, latest_adjudications

pytest_plugins = ("api_fixtures",)

FEVER = "P-0002"
DISCHARGED = "P-0003"
DEAD = "P-0004"
LONG_AGO = "P-0005"
UNGRADED = "P-0006"


def send(client: TestClient, *records: dict[str, Any]) -> None:
    for body in records:
        reply = client.post("/v1/records", json=body)
        assert reply.status_code == 201, reply.text


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def hours_ago(value: str) -> float:
    return (datetime.now(UTC) - parse(value)) / timedelta(hours=1)


def ward() -> list[dict[str, Any]]:
    """On the ward, fever at 20 h: grade 1 now and at most."""
    return [
        enrolment(FEVER, care_unit="WARD"),
        vitals(20, 20, patient=FEVER, temperature_c=38.5, sbp_mmhg=110, dbp_mmhg=70),
    ]


def out_of_monitoring() -> list[dict[str, Any]]:
    """Discharged at 40 h; dead at 50 h; infused 20 days ago."""
    long_ago = (INFUSION - timedelta(days=17)).isoformat()
    return [
        enrolment(DISCHARGED),
        vitals(30, 30, patient=DISCHARGED, temperature_c=38.2),
        record("discharge", 31, patient=DISCHARGED, discharged_at=at(40)),
        enrolment(DEAD),
        vitals(40, 30, patient=DEAD, temperature_c=39.0),
        record("outcome", 41, patient=DEAD, at=at(50), event="death"),
        enrolment(LONG_AGO, infusion_at=long_ago),
    ]


def everyone(client: TestClient) -> None:
    send(client, *escalating(), *ward(), *out_of_monitoring(), enrolment(UNGRADED))


def names(page: dict[str, Any]) -> list[str]:
    return [p["pseudonym"] for p in page["items"]]


def review(client: TestClient, **params: Any) -> dict[str, Any]:
    reply = client.get("/v1/review/patients", params=params)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def open_alerts(client: TestClient, patient: str) -> list[dict[str, Any]]:
    params = {"patient": patient, "status": "open", "limit": 500}
    items: list[dict[str, Any]] = client.get("/v1/alerts", params=params).json()[
        "items"
    ]
    return items


def test_patients_on_monitoring_now_by_grade(client: TestClient) -> None:
    """Monitored now: in the window, in a unit, alive; highest grade first."""
    everyone(client)
    page = review(client)
    # The ungraded patient is monitored too and comes last (no grade).
    assert names(page) == [PATIENT, FEVER, UNGRADED]
    assert page["total"] == 3
    assert page["rule_set"] == "astct-2019"
    assert page["monitoring_days"] == 14.0
    first, second, third = page["items"]
    assert (first["current_grade"], first["max_grade"]) == (3, 3)
    assert parse(first["current_grade_at"]) == parse(at(33))
    assert (second["current_grade"], second["max_grade"]) == (1, 1)
    assert (third["current_grade"], third["max_grade"]) == (None, None)
    assert first["day"] == 3
    assert 3.0 <= first["days_since_infusion"] < 3.01
    assert (first["care_unit"], second["care_unit"]) == ("PICU", "WARD")
    assert first["monitored"] is True
    assert parse(first["last_vitals_at"]) == parse(at(33))
    assert first["last_vitals_age_h"] == pytest.approx(72 - 33, abs=0.2)
    assert third["last_vitals_at"] is None

    expected = open_alerts(client, PATIENT)
    assert first["open_alert_count"] == len(expected) >= 3
    assert first["open_alert_kinds"] == sorted({a["kind"] for a in expected})
    assert {"crs_onset", "severe_crs"} <= set(first["open_alert_kinds"])
    listed = first["open_alerts"]
    assert sorted(a["id"] for a in listed) == sorted(a["id"] for a in expected)
    triggered = [parse(a["triggered_at"]) for a in listed]
    assert triggered == sorted(triggered)  # oldest first
    (severe_crs,) = [a for a in listed if a["kind"] == "severe_crs"]
    assert severe_crs["severity"] == "critical"
    assert parse(severe_crs["triggered_at"]) == parse(at(32))
    assert severe_crs["age_h"] == pytest.approx(72 - 32, abs=0.2)
    assert severe_crs["age_h"] == pytest.approx(
        hours_ago(severe_crs["triggered_at"]), abs=0.1
    )


def test_all_includes_patients_out_of_monitoring(client: TestClient) -> None:
    """Discharged, dead and past the window are listed only with all=true."""
    everyone(client)
    page = review(client, all="true")
    assert page["total"] == 6
    rows = {p["pseudonym"]: p for p in page["items"]}
    assert {k for k, p in rows.items() if not p["monitored"]} == {
        DISCHARGED,
        DEAD,
        LONG_AGO,
    }
    assert rows[DISCHARGED]["care_unit"] is None
    assert parse(rows[DISCHARGED]["discharged_at"]) == parse(at(40))
    assert parse(rows[DEAD]["died_at"]) == parse(at(50))
    assert rows[LONG_AGO]["day"] == 20
    assert names(page)[:2] == [PATIENT, FEVER]
    # Same grades: by pseudonym (DISCHARGED and DEAD are both grade 1 at most).
    graded_once = [n for n in names(page) if rows[n]["max_grade"] == 1]
    assert graded_once == sorted(graded_once)


def test_patient_filters_and_pages(client: TestClient) -> None:
    """min_grade, care_unit, has_open_alerts narrow; limit/offset page the rest."""
    everyone(client)
    assert names(review(client, min_grade=3)) == [PATIENT]
    assert names(review(client, min_grade=1)) == [PATIENT, FEVER]
    assert names(review(client, min_grade=4)) == []
    assert names(review(client, care_unit="WARD")) == [FEVER]
    assert names(review(client, care_unit="ICU")) == []
    # A death closes no unit stay: the dead patient's unit is still the PICU.
    assert names(review(client, care_unit="PICU", all="true", min_grade=1)) == [
        PATIENT,
        DEAD,
    ]
    for alert in open_alerts(client, FEVER):
        url = f"/v1/alerts/{alert['id']}/acknowledge"
        assert client.post(url, json={"by": "dr-lee"}).status_code == 200
    quiet = review(client, has_open_alerts="false")
    assert FEVER in names(quiet)
    assert PATIENT not in names(quiet)
    assert review(client, care_unit="WARD")["items"][0]["open_alerts"] == []
    assert PATIENT in names(review(client, has_open_alerts="true"))
    assert FEVER not in names(review(client, has_open_alerts="true"))

    page = review(client, limit=1, offset=1)
    assert (names(page), page["total"]) == ([FEVER], 3)
    beyond = review(client, offset=10)
    assert (beyond["items"], beyond["total"]) == ([], 3)


def test_open_alerts_by_kind_severity_and_age(client: TestClient) -> None:
    """Counts per kind and severity with the oldest age; the list oldest first."""
    everyone(client)
    every_open = client.get("/v1/alerts", params={"status": "open", "limit": 500})
    expected = every_open.json()["items"]
    reply = client.get("/v1/review/alerts", params={"limit": 500})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["total"] == len(expected) == len(body["items"])
    assert sum(g["count"] for g in body["groups"]) == body["total"]
    assert {a["id"] for a in body["items"]} == {a["id"] for a in expected}
    triggered = [parse(a["triggered_at"]) for a in body["items"]]
    assert triggered == sorted(triggered)
    severities = [g["severity"] for g in body["groups"]]
    order = {"critical": 0, "warning": 1, "info": 2}
    assert severities == sorted(severities, key=order.__getitem__)
    (severe_group,) = [g for g in body["groups"] if g["kind"] == "severe_crs"]
    assert (severe_group["severity"], severe_group["count"]) == ("critical", 1)
    assert severe_group["oldest_age_h"] == pytest.approx(72 - 32, abs=0.2)
    onsets = [a for a in expected if a["kind"] == "crs_onset"]
    (onset_group,) = [g for g in body["groups"] if g["kind"] == "crs_onset"]
    assert onset_group["count"] == len(onsets) >= 2
    oldest = min(parse(a["triggered_at"]) for a in onsets)
    assert parse(onset_group["oldest_triggered_at"]) == oldest
    units = {a["patient"]: a["care_unit"] for a in body["items"]}
    assert (units[PATIENT], units[FEVER]) == ("PICU", "WARD")
    assert units.get(DISCHARGED) is None

    def ids(**params: Any) -> set[int]:
        got = client.get("/v1/review/alerts", params={"limit": 500, **params})
        assert got.status_code == 200, got.text
        return {a["id"] for a in got.json()["items"]}

    def where(test: Any) -> set[int]:
        return {a["id"] for a in expected if test(a)}

    assert ids(kind="severe_crs") == where(lambda a: a["kind"] == "severe_crs")
    assert ids(severity="critical") == where(lambda a: a["severity"] == "critical")
    assert ids(care_unit="WARD") == where(lambda a: a["patient"] == FEVER)
    assert ids(patient=DEAD) == where(lambda a: a["patient"] == DEAD)
    # Older than 45 h: conditions before 27 h after infusion (72 h ago).
    assert ids(min_age_h=45) == where(lambda a: hours_ago(a["triggered_at"]) >= 45)
    assert ids(min_age_h=45) != ids()
    assert ids(min_age_h=45)

    page = client.get("/v1/review/alerts", params={"limit": 2, "offset": 1}).json()
    assert [a["id"] for a in page["items"]] == [a["id"] for a in body["items"][1:3]]
    assert page["total"] == body["total"]
    assert page["groups"] == body["groups"]

    acked = body["items"][0]["id"]
    url = f"/v1/alerts/{acked}/acknowledge"
    assert client.post(url, json={"by": "dr-lee"}).status_code == 200
    after = client.get("/v1/review/alerts", params={"limit": 500}).json()
    assert after["total"] == body["total"] - 1
    assert acked not in {a["id"] for a in after["items"]}


def test_the_timeline_is_one_ordered_list_of_current_events(
    client: TestClient,
) -> None:
    """Records, grades, alerts and acknowledgements in time order; retracted
    and superseded records are left out."""
    send(
        client,
        *escalating(),
        record(
            "oxygen",
            5,
            observed_at=at(34),
            device="nasal_cannula",
            flow_l_min=4,
            fio2=0.3,
        ),
        record("oxygen", 6, observed_at=at(36), device="non_rebreather_mask"),
        record("treatment", 7, given_at=at(34.5), drug="tocilizumab"),
        record("treatment", 8, given_at=at(21), drug="acetaminophen"),
        record("fluid_bolus", 9, given_at=at(27), for_hypotension=True, volume_ml=500),
        vitals(10, 35, temperature_c=40.5, sbp_mmhg=95, dbp_mmhg=55),
        record("vasopressor_stop", 11, stopped_at=at(38), start_record_id="m-3"),
        record("retraction", 12, at=at(39), target_record_id="m-10", reason="probe"),
        vitals(13, 37, supersedes="m-4", correction_reason="typo", temperature_c=37.4),
    )
    (onset,) = client.get("/v1/alerts", params={"kind": "crs_onset"}).json()["items"]
    ack = f"/v1/alerts/{onset['id']}/acknowledge"
    assert client.post(ack, json={"by": "dr-lee", "note": "seen"}).status_code == 200

    reply = client.get(f"/v1/patients/{PATIENT}/timeline")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["patient"], body["rule_set"]) == (PATIENT, "astct-2019")
    assert body["computed_max_grade"] == 3
    assert body["latest_adjudication"] is None
    events = body["events"]
    assert body["total"] == len(events)
    keys = [(parse(e["at"]), e["t_hours"]) for e in events]
    assert keys == sorted(keys)
    kinds = {e["kind"] for e in events}
    assert {
        "vitals",
        "oxygen",
        "vasopressor_start",
        "vasopressor_stop",
        "treatment",
        "fluid_bolus",
        "grade",
        "alert",
        "acknowledgement",
    } <= kinds
    assert "retraction" not in kinds

    vital = {e["t_hours"]: e["data"] for e in events if e["kind"] == "vitals"}
    assert vital[20] == {"temperature_c": 38.9, "sbp_mmhg": 100, "dbp_mmhg": 58}
    assert 35 not in vital  # retracted
    # The correction at 37 h replaces the temperature it carries, not the BP.
    assert vital[33] == {"sbp_mmhg": 92, "dbp_mmhg": 50}
    assert vital[37] == {"temperature_c": 37.4}
    (corrected,) = [e for e in events if e["kind"] == "vitals" and e["t_hours"] == 37]
    assert corrected["data"] == {"temperature_c": 37.4}
    assert corrected["summary"] == "T 37.4 °C"

    oxygen = [e["data"] for e in events if e["kind"] == "oxygen"]
    assert [(o["device"], o["astct_level"]) for o in oxygen] == [
        ("nasal_cannula", 2),
        ("non_rebreather_mask", 3),
    ]
    assert (oxygen[0]["flow_l_min"], oxygen[0]["fio2"]) == (4, 0.3)
    (stop,) = [e for e in events if e["kind"] == "vasopressor_stop"]
    assert stop["data"]["drug"] == "norepinephrine"
    assert (stop["data"]["dose"], stop["data"]["unit"]) == (0.05, "ug/kg/min")
    treatments = [e["data"] for e in events if e["kind"] == "treatment"]
    assert treatments == [
        {"drug": "acetaminophen", "drug_class": "antipyretic"},
        {"drug": "tocilizumab", "drug_class": "anti-cytokine"},
    ]
    grades = {e["t_hours"]: e["data"] for e in events if e["kind"] == "grade"}
    assert [grades[t]["grade"] for t in (20, 26, 32)] == [1, 2, 3]
    assert grades[32]["rule_set"] == "astct-2019"
    assert grades[32]["rule_set_version"]
    assert grades[32]["reasons"]
    current = client.get(f"/v1/patients/{PATIENT}/grades").json()["items"]
    assert sorted(e["ref"] for e in events if e["kind"] == "grade") == sorted(
        g["id"] for g in current
    )
    (acked,) = [e for e in events if e["kind"] == "acknowledgement"]
    assert acked["ref"] == onset["id"]
    assert (acked["data"]["by"], acked["data"]["note"]) == ("dr-lee", "seen")
    alert_at = [e for e in events if e["kind"] == "alert" and e["ref"] == onset["id"]]
    assert events.index(alert_at[0]) < events.index(acked)
    # At one time, the record comes before the grade it gives and its alerts.
    at32 = [e["kind"] for e in events if e["t_hours"] == 32]
    assert at32.index("vasopressor_start") < at32.index("grade") < at32.index("alert")

    only = client.get(
        f"/v1/patients/{PATIENT}/timeline",
        params=[("kind", "treatment"), ("kind", "oxygen"), ("limit", 3)],
    ).json()
    assert only["total"] == 4
    assert [e["kind"] for e in only["events"]] == [
        "treatment",
        "oxygen",
        "treatment",
    ]
    rest = client.get(
        f"/v1/patients/{PATIENT}/timeline",
        params=[("kind", "treatment"), ("kind", "oxygen"), ("offset", 3)],
    ).json()
    assert [e["kind"] for e in rest["events"]] == ["oxygen"]


def test_timeline_png_decodes(client: TestClient) -> None:
    """Four panels as a PNG that matplotlib reads back."""
    from matplotlib.image import imread

    send(
        client,
        *escalating(),
        record("treatment", 7, given_at=at(34.5), drug="tocilizumab"),
        record("oxygen", 5, observed_at=at(34), device="cpap"),
    )
    payload = {"decision": "override", "grade": 3, "reason": "ICU notes", "by": "r"}
    url = f"/v1/patients/{PATIENT}/adjudications"
    assert client.post(url, json=payload).status_code == 201
    for params in ({}, {"x_unit": "days"}):
        reply = client.get(f"/v1/patients/{PATIENT}/timeline.png", params=params)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "image/png"
        png = reply.content
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(png) > 20_000
        image = imread(io.BytesIO(png), format="png")
        assert image.shape[0] == 900
        assert image.shape[1] == 900
    empty = client.post("/v1/records", json=enrolment(UNGRADED))
    assert empty.status_code == 201
    bare = client.get(f"/v1/patients/{UNGRADED}/timeline.png")
    assert bare.status_code == 200
    assert bare.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_patients_and_bad_parameters(client: TestClient) -> None:
    """404 for an unknown pseudonym, 422 for bad parameters, never an echo."""
    send(client, *escalating())
    for suffix in ("timeline", "timeline.png", "adjudications"):
        missing = client.get(f"/v1/patients/P-nobody-zz/{suffix}")
        assert missing.status_code == 404, suffix
        assert missing.json()["detail"][0]["field"] == "pseudonym"
        assert "P-nobody-zz" not in missing.text
    body = {"decision": "confirm", "reason": "ok", "by": "r"}
    missing = client.post("/v1/patients/P-nobody-zz/adjudications", json=body)
    assert missing.status_code == 404
    cases = [
        ("/v1/review/patients", {"min_grade": "zz-secret"}, "min_grade"),
        ("/v1/review/patients", {"min_grade": 6}, "min_grade"),
        ("/v1/review/patients", {"all": "zz-secret"}, "all"),
        ("/v1/review/patients", {"has_open_alerts": "zz-secret"}, "has_open_alerts"),
        ("/v1/review/patients", {"limit": 0}, "limit"),
        ("/v1/review/patients", {"care_unit": ""}, "care_unit"),
        ("/v1/review/alerts", {"kind": "zz-secret"}, "kind"),
        ("/v1/review/alerts", {"severity": "zz-secret"}, "severity"),
        ("/v1/review/alerts", {"min_age_h": -1}, "min_age_h"),
        ("/v1/review/alerts", {"offset": -1}, "offset"),
        (f"/v1/patients/{PATIENT}/timeline", {"kind": "zz-secret"}, "kind[0]"),
        (f"/v1/patients/{PATIENT}/timeline", {"rule_set": "zz-secret"}, "rule_set"),
        (f"/v1/patients/{PATIENT}/timeline.png", {"x_unit": "zz-secret"}, "x_unit"),
    ]
    for url, params, field in cases:
        reply = client.get(url, params=params)
        assert reply.status_code == 422, (url, params)
        assert [d["field"] for d in reply.json()["detail"]] == [field]
        assert "zz-secret" not in reply.text


def grade_rows(sessions: sessionmaker[Session]) -> list[tuple[Any, ...]]:
    with sessions() as session:
        rows = session.scalars(select(Grade).order_by(Grade.id))
        return [
            (g.id, g.evaluated_at, g.grade, g.rule_set, g.snapshot_hash) for g in rows
        ]


def test_adjudication_is_stored_beside_the_computed_grade(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """Confirm, then override: two rows, the latest counts, grades untouched."""
    send(client, *escalating())
    before = grade_rows(db_sessions)
    url = f"/v1/patients/{PATIENT}/adjudications"
    confirm = {"decision": "confirm", "reason": " matches the chart ", "by": "dr-lee"}
    reply = client.post(url, json=confirm)
    assert reply.status_code == 201, reply.text
    first = reply.json()
    grades = client.get(f"/v1/patients/{PATIENT}/grades").json()["items"]
    (peak,) = [g for g in grades if g["t_hours"] == 32]
    assert first["decision"] == "confirm"
    assert (first["adjudicated_grade"], first["computed_grade"]) == (3, 3)
    assert first["computed_grade_id"] == peak["id"]  # the first row at grade 3
    assert parse(first["computed_grade_at"]) == parse(at(32))
    assert (first["reason"], first["by"]) == ("matches the chart", "dr-lee")
    assert first["rule_set"] == "astct-2019"
    assert (first["latest"], first["stale"]) == (True, False)
    assert datetime.now(UTC) - parse(first["adjudicated_at"]) < timedelta(minutes=1)

    override = {"decision": "override", "grade": 4, "reason": "on BiPAP", "by": "x"}
    second = client.post(url, json=override)
    assert second.status_code == 201, second.text
    assert (second.json()["adjudicated_grade"], second.json()["computed_grade"]) == (
        4,
        3,
    )
    confirm_again = {**confirm, "grade": 3}
    assert client.post(url, json=confirm_again).status_code == 201
    assert client.post(url, json=override).status_code == 201
    assert grade_rows(db_sessions) == before  # never changed, never added

    listed = client.get(url).json()
    assert listed["total"] == 4
    assert listed["computed_max_grade"] == 3
    items = listed["items"]
    assert [i["decision"] for i in items] == [
        "override",
        "confirm",
        "override",
        "confirm",
    ]
    assert [i["latest"] for i in items] == [True, False, False, False]
    assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    page = client.get(url, params={"limit": 1, "offset": 1}).json()
    assert [i["id"] for i in page["items"]] == [items[1]["id"]]
    assert page["items"][0]["latest"] is False

    with db_sessions() as session:
        pid = session.scalars(select(Patient.id).where(Patient.pseudonym == PATIENT))
        patient_id = pid.one()
        latest = latest_adjudications(session, [patient_id, 99999])
        assert set(latest) == {patient_id}
        row = latest[patient_id]
        assert (row.decision, row.adjudicated_grade, row.computed_grade) == (
            "override",
            4,
            3,
        )
        assert (row.patient, row.by, row.computed_grade_id) == (
            PATIENT,
            "x",
            peak["id"],
        )
        assert row.stale(3) is False
        assert row.stale(2) is True
        assert latest_adjudications(session, []) == {}
        assert latest_adjudications(session, [patient_id], rule_set="other") == {}

    timeline = client.get(f"/v1/patients/{PATIENT}/timeline").json()
    verdicts = [e for e in timeline["events"] if e["kind"] == "adjudication"]
    assert [v["ref"] for v in verdicts] == sorted(i["id"] for i in items)
    assert [v["data"]["latest"] for v in verdicts] == [False, False, False, True]
    assert verdicts[-1]["data"]["adjudicated_grade"] == 4
    assert verdicts[-1]["data"]["computed_grade_t_hours"] == 32
    assert timeline["latest_adjudication"]["id"] == items[0]["id"]
    assert timeline["events"][-1]["kind"] == "adjudication"

    # A retraction lowers the computed maximum: every verdict is now stale.
    send(
        client, record("retraction", 50, at=at(40), target_record_id="m-3", reason="x")
    )
    stale = client.get(url).json()
    assert stale["computed_max_grade"] == 2
    assert all(i["stale"] for i in stale["items"])
    assert [i["computed_grade"] for i in stale["items"]] == [3, 3, 3, 3]


def test_adjudications_are_refused_without_a_grade_or_when_inconsistent(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """409 without grades or against the computed maximum; 422 for bad bodies."""
    send(client, *escalating(), enrolment(UNGRADED))
    none = client.post(
        f"/v1/patients/{UNGRADED}/adjudications",
        json={"decision": "confirm", "reason": "r", "by": "b"},
    )
    assert none.status_code == 409
    assert none.json()["detail"] == [
        {"field": "pseudonym", "reason": "the patient has no computed grade yet"}
    ]
    url = f"/v1/patients/{PATIENT}/adjudications"
    conflicts = [
        {"decision": "override", "grade": 3, "reason": "r", "by": "b"},
        {"decision": "confirm", "grade": 2, "reason": "r", "by": "b"},
    ]
    for body in conflicts:
        reply = client.post(url, json=body)
        assert reply.status_code == 409, body
        assert [d["field"] for d in reply.json()["detail"]] == ["grade"]
    invalid: list[tuple[dict[str, Any], str]] = [
        ({"decision": "override", "reason": "r", "by": "b"}, "grade"),
        ({"decision": "zz-secret", "reason": "r", "by": "b"}, "decision"),
        ({"decision": "confirm", "reason": "   ", "by": "b"}, "reason"),
        ({"decision": "confirm", "reason": "r" * 501, "by": "b"}, "reason"),
        ({"decision": "confirm", "reason": "r", "by": ""}, "by"),
        ({"decision": "confirm", "reason": "r", "by": "b" * 121}, "by"),
        ({"decision": "confirm", "reason": "r"}, "by"),
        ({"decision": "override", "grade": 6, "reason": "r", "by": "b"}, "grade"),
        ({"decision": "confirm", "reason": "r", "by": "b", "zz": 1}, "zz"),
    ]
    for sent, field in invalid:
        reply = client.post(url, json=sent)
        assert reply.status_code == 422, sent
        assert [d["field"] for d in reply.json()["detail"]] == [field], sent
        assert "zz-secret" not in reply.text
    assert count(db_sessions, Adjudication) == 0
    longest = {"decision": "confirm", "reason": "r" * 500, "by": "b" * 120}
    assert client.post(url, json=longest).status_code == 201
    assert count(db_sessions, Adjudication) == 1


def test_event_kinds_match_the_service() -> None:
    """The API's event kinds are the service's."""
    assert get_args(EventKind) == EVENT_KINDS


def test_openapi_documents_the_review_routes(client: TestClient) -> None:
    """The review routes are in /openapi.json, the PNG as image/png."""
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/review/patients": {"get"},
        "/v1/review/alerts": {"get"},
        "/v1/patients/{pseudonym}/timeline": {"get"},
        "/v1/patients/{pseudonym}/timeline.png": {"get"},
        "/v1/patients/{pseudonym}/adjudications": {"get", "post"},
    }.items() <= {path: set(item) for path, item in paths.items()}.items()
    png = paths["/v1/patients/{pseudonym}/timeline.png"]["get"]["responses"]["200"]
    assert "image/png" in png["content"]
    posted = paths["/v1/patients/{pseudonym}/adjudications"]["post"]["responses"]
    assert set(posted) >= {"201", "404", "409", "422"}
