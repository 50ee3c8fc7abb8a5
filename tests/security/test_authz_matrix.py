"""T9: the authorization matrix, driven by the policy table (crsmon/auth/policy.py).

Every route of the app x every caller (no credential, bedside unit A, bedside
unit B, reviewer unit A, reviewer of every unit, analyst, admin) x every
object (owned by unit A, owned by unit B, nonexistent). The expected answer of
each cell comes from the policy table alone:

- no credential on a protected route: 401 with ``WWW-Authenticate``;
- a role the route's rule does not name: 403;
- an allowed role on an object outside its units, or a missing object: the
  same "not found" (404, or 422 ``patient`` for a record written to a patient)
  with a byte-identical body;
- otherwise: success (2xx; acknowledging an alert twice is 409).

Each 401 and 403 writes exactly one event to the ``security`` audit chain, no
denial names a patient, and nothing is written by a denied or out-of-scope
write. The token attacks that apply to API keys follow (crsmon offers no
signed tokens, so the JWT attacks of T9 have no surface here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from api_feed import (
    MakeClient,
    TestClient,
    at,
    enrolment,
    escalating,
    role_keys,
    vitals,
)
from fhir_build import administration, bundle, observation
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from crsmon.auth.keys import parse
from crsmon.auth.policy import POLICY, Rule
from crsmon.db.audit import SECURITY, Actor, verify
from crsmon.db.models import Alert, ApiKey, AuditEvent, ClinicalRecord, Patient
from crsmon.interfaces.cds import card_uuid
from crsmon.services.interfaces import link_patient
from crsmon.services.keys import create_key
from crsmon.settings import Settings

pytest_plugins = ("api_fixtures",)

UNIT_A, UNIT_B = "PICU-A", "PICU-B"
OWNER = {"A": "P-A", "B": "P-B"}
MISSING_PATIENT = "P-NONE"
MISSING_ALERT = 999_999
MISSING_KEY = "0123456789ab"


@dataclass(frozen=True)
class Caller:
    """Who calls: a name, a role (None: no credential) and units."""

    name: str
    role: str | None
    units: tuple[str, ...] = ()

    def sees(self, owner: str) -> bool:
        """Whether an object of unit ``owner`` is inside the caller's units."""
        unit = {"A": UNIT_A, "B": UNIT_B}[owner]
        return "*" in self.units or unit in self.units


CALLERS = (
    Caller("anonymous", None),
    Caller("bedside-A", "bedside", (UNIT_A,)),
    Caller("bedside-B", "bedside", (UNIT_B,)),
    Caller("reviewer-A", "reviewer", (UNIT_A,)),
    Caller("reviewer-all", "reviewer", ("*",)),
    Caller("analyst", "analyst", ("*",)),
    Caller("admin", "admin", ("*",)),
)
OBJECTS = ("A", "B", "missing")


def _retag(record: dict[str, Any], tag: str) -> dict[str, Any]:
    return {**record, "source_record_id": f"{tag}-{record['source_record_id']}"}


@dataclass
class World:
    """The seeded database: two patients (unit A, unit B), alerts, keys."""

    client: TestClient
    sessions: sessionmaker[Session]
    keys: dict[str, str]
    alerts: dict[str, list[int]]
    spare_keys: list[str]
    serial: Any


def _keys(
    sessions: sessionmaker[Session], settings: Settings, callers: list[Caller]
) -> list[str]:
    """One key per caller, in one transaction."""
    with sessions.begin() as session:
        return [
            create_key(
                session,
                name=caller.name,
                role=caller.role or "admin",
                units=list(caller.units),
                expires_at=None,
                actor=Actor("test", "test"),
                now=datetime.now(UTC),
                pepper=settings.pepper(),
            )[1]
            for caller in callers
        ]


@pytest.fixture
def world(make_client: MakeClient, db_sessions: sessionmaker[Session]) -> World:
    client = make_client(risk_model_dir=None)  # no risk scores: faster grading
    for owner, unit in (("A", UNIT_A), ("B", UNIT_B)):
        patient = OWNER[owner]
        feed = escalating(patient)
        feed[0] = enrolment(patient, care_unit=unit)
        for record in feed:
            reply = client.post("/v1/records", json=_retag(record, patient))
            assert reply.status_code == 201, reply.text
    settings = Settings(database_url="sqlite://", broker_url=None)
    with db_sessions.begin() as session:
        for owner in ("A", "B"):  # the EHR's Patient/<owner> is the unit's patient
            link_patient(
                session, kind="reference", ref=f"Patient/{owner}",
                pseudonym=OWNER[owner], pepper=settings.pepper(),
                actor=Actor("test", "test"), now=datetime.now(UTC),
            )  # fmt: skip
    named = [c for c in CALLERS if c.role]
    keys = dict(
        zip([c.name for c in named], _keys(db_sessions, settings, named), strict=True)
    )
    with db_sessions() as session:
        alerts = {
            owner: list(
                session.scalars(
                    select(Alert.id)
                    .join(Patient)
                    .where(Patient.pseudonym == OWNER[owner])
                    .order_by(Alert.id)
                )
            )
            for owner in ("A", "B")
        }
    assert alerts["A"], "the escalating feed raises alerts"
    assert alerts["B"], "the escalating feed raises alerts"
    spares = [Caller(f"spare-{n}", "bedside", (UNIT_A,)) for n in range(40)]
    spare = [parse(text) for text in _keys(db_sessions, settings, spares)]
    return World(
        client,
        db_sessions,
        keys,
        alerts,
        [p[0] for p in spare if p is not None],
        count(1),
    )


def _path(rule: Rule, world: World, obj: str) -> str:
    path = rule.path
    if "{pseudonym}" in path:
        path = path.replace("{pseudonym}", OWNER.get(obj, MISSING_PATIENT))
    if "{alert_id}" in path:
        alert = MISSING_ALERT if obj == "missing" else world.alerts[obj][0]
        path = path.replace("{alert_id}", str(alert))
    if "{table}" in path:
        path = path.replace("{table}", "grade-table")
    if "{key_id}" in path:
        key = MISSING_KEY if obj == "missing" else world.spare_keys.pop()
        path = path.replace("{key_id}", key)
    return path


def _body(rule: Rule, world: World, obj: str) -> dict[str, Any]:
    n = next(world.serial)
    patient = OWNER.get(obj, MISSING_PATIENT)
    if rule.path == "/v1/records":
        return {"json": _retag(vitals(n, 40, patient=patient, temperature_c=37.0), "z")}
    if rule.path == "/v1/records/batch":
        line = json.dumps(
            _retag(vitals(n, 41, patient=patient, heart_rate_per_min=90), "y")
        )
        return {
            "content": line.encode(),
            "headers": {"Content-Type": "application/x-ndjson"},
        }
    fhir = {"headers": {"Content-Type": "application/fhir+json"}}
    subject = f"Patient/{obj if obj in OWNER else 'NONE'}"
    if rule.path == "/fhir/Observation":
        sent = observation(f"mx-{n}", "8867-4", at(40), 90, "/min", subject=subject)
        return {"json": sent} | fhir
    if rule.path == "/fhir/MedicationAdministration":
        given = administration(
            f"mx-{n}", "612865", status="completed", start=at(40), subject=subject
        )
        return {"json": given} | fhir
    if rule.path == "/fhir":
        sent = observation(f"mx-{n}", "8867-4", at(41), 91, "/min", subject=subject)
        return {"json": bundle("batch", sent)} | fhir
    if rule.path == "/cds-services/crsmon-crs":
        patient_id = obj if obj in OWNER else "NONE"
        return {"json": {"hook": "patient-view", "hookInstance": f"h-{n}",
                         "context": {"patientId": patient_id}}}  # fmt: skip
    if rule.path.endswith("/feedback"):
        alert = MISSING_ALERT if obj == "missing" else world.alerts[obj][-1]
        uuid = card_uuid(alert)
        return {"json": {"feedback": [{"card": uuid, "outcome": "accepted"}]}}
    if rule.path.endswith("/adjudications") and rule.method == "POST":
        return {"json": {"decision": "confirm", "reason": "matrix", "by": "tester"}}
    if rule.path.endswith("/acknowledge"):
        return {"json": {"by": "tester"}}
    if rule.path == "/v1/admin/keys" and rule.method == "POST":
        return {"json": {"name": f"made-{n}", "role": "bedside", "units": [UNIT_A]}}
    if rule.path.endswith("/revoke"):
        return {"json": {"reason": "matrix"}}
    return {}


def _has_object(rule: Rule) -> bool:
    return (
        "{" in rule.path
        or rule.path.startswith(("/v1/records", "/fhir"))
        or (rule.path.startswith("/cds-services/") and rule.method == "POST")
    )


def _expected(rule: Rule, caller: Caller, obj: str) -> str:
    """``ok``, ``unauthenticated``, ``forbidden`` or ``missing``, from the table."""
    if rule.public:
        return "ok"
    if caller.role is None:
        return "unauthenticated"
    if caller.role not in rule.roles:
        return "forbidden"
    if not _has_object(rule) or rule.scope != "unit":
        return "missing" if obj == "missing" and "{key_id}" in rule.path else "ok"
    if obj == "missing" or not caller.sees(obj):
        return "missing"
    return "ok"


def _security_events(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(
            session.scalars(
                select(AuditEvent.id).where(AuditEvent.chain == SECURITY)
            ).all()
        )


def _send(world: World, rule: Rule, caller: Caller, obj: str) -> Any:
    request = _body(rule, world, obj)
    headers = dict(request.pop("headers", {}))
    headers["Authorization"] = (
        f"Bearer {world.keys[caller.name]}" if caller.role else ""
    )
    path = _path(rule, world, obj)
    return world.client.request(rule.method, path, headers=headers or None, **request)


def _outcome(rule: Rule, reply: Any) -> str:
    status = reply.status_code
    if status == 401:
        return "unauthenticated"
    if status == 403:
        return "forbidden"
    if status == 404:
        return "missing"
    if rule.path == "/v1/records" and status == 422:
        return "missing" if reply.json()["detail"][0]["field"] == "patient" else "bad"
    if rule.path == "/v1/records/batch" and status == 200:
        line = reply.json()["items"][0]
        return "missing" if line["status"] == "refused" else "ok"
    if rule.path == "/cds-services/crsmon-crs" and status == 200:
        return "ok" if reply.json()["cards"] else "missing"
    if rule.path.startswith("/fhir/") and status == 422:
        return "missing" if "patient-unlinked" in reply.text else "bad"
    if rule.path == "/fhir" and status == 200:
        answer = reply.json()["entry"][0]["response"]
        if answer["status"].startswith("422"):
            return "missing" if "patient-unlinked" in reply.text else "bad"
        return "ok"
    if rule.path.endswith("/acknowledge") and status == 409:
        return "ok"  # acknowledged by an earlier allowed cell: access was granted
    return "ok" if status < 300 else f"status {status}"


def test_every_cell_of_the_matrix_matches_the_policy_table(world: World) -> None:
    mismatches: list[str] = []
    missing_bodies: dict[tuple[str, str], set[str]] = {}
    cells = 0
    for rule in POLICY:
        objects = OBJECTS if _has_object(rule) else ("none",)
        for caller in CALLERS:
            for obj in objects:
                before = _security_events(world.sessions)
                reply = _send(world, rule, caller, obj)
                cells += 1
                want = _expected(rule, caller, obj)
                got = _outcome(rule, reply)
                where = f"{rule.method} {rule.path} as {caller.name} on {obj}"
                if got != want:
                    mismatches.append(
                        f"{where}: want {want}, got {got} {reply.text[:200]}"
                    )
                denied = want in ("unauthenticated", "forbidden")
                added = _security_events(world.sessions) - before
                if denied and added != 1:
                    mismatches.append(f"{where}: {added} security audit events")
                if not denied and added:
                    mismatches.append(f"{where}: audited as a denial")
                if denied and any(p in reply.text for p in OWNER.values()):
                    mismatches.append(f"{where}: the denial names a patient")
                if want == "unauthenticated":
                    assert reply.headers.get("WWW-Authenticate", "").startswith(
                        "Bearer"
                    )
                if want == "missing" and rule.scope == "unit":
                    missing_bodies.setdefault((rule.method, rule.path), set()).add(
                        reply.text
                    )
    assert not mismatches, "\n".join(mismatches)
    # A cross-unit object and a nonexistent one answer byte for byte alike.
    different = {
        route: bodies for route, bodies in missing_bodies.items() if len(bodies) > 1
    }
    assert not different, different
    assert cells > 150
    with world.sessions() as session:
        assert verify(session).ok


def test_every_route_of_the_app_is_in_the_policy_table(client: TestClient) -> None:
    """Deny by default: a route missing from the table would be refused to all;
    here we prove there is none, and no policy row is stale."""
    paths = client.get("/openapi.json").json()["paths"]
    routes = {(m.upper(), path) for path, item in paths.items() for m in item}
    table = {(r.method, r.path) for r in POLICY}
    assert routes == table


def test_out_of_scope_writes_store_nothing(world: World) -> None:
    key_a = world.keys["bedside-A"]
    with world.sessions() as session:
        before = session.scalar(
            select(ClinicalRecord.id).order_by(ClinicalRecord.id.desc())
        )
    for n, patient in enumerate((OWNER["B"], MISSING_PATIENT)):
        record = _retag(vitals(900 + n, 44, patient=patient, temperature_c=40.0), "x")
        reply = world.client.post(
            "/v1/records", json=record, headers={"Authorization": f"Bearer {key_a}"}
        )
        assert reply.status_code == 422
        assert reply.json() == {
            "detail": [{"field": "patient", "reason": "not enrolled"}]
        }
    with world.sessions() as session:
        after = session.scalar(
            select(ClinicalRecord.id).order_by(ClinicalRecord.id.desc())
        )
        alert_b = session.get_one(Alert, world.alerts["B"][0])
    assert after == before
    # A reviewer of unit A cannot acknowledge unit B's alert: still open.
    reply = world.client.post(
        f"/v1/alerts/{world.alerts['B'][0]}/acknowledge",
        json={"by": "intruder"},
        headers={"Authorization": f"Bearer {world.keys['reviewer-A']}"},
    )
    assert reply.status_code == 404
    assert alert_b.status == "open"


def test_record_keys_and_corrections_of_another_unit_are_conflicts(
    world: World,
) -> None:
    """A sender's keys are unique across units: reusing unit B's key, or
    correcting or retracting unit B's record, is a 409 (never a 500, never a
    record stored unlinked), and unit B's record is untouched."""
    key_a = {"Authorization": f"Bearer {world.keys['bedside-A']}"}
    b_key = f"{OWNER['B']}-m-1"  # stored for unit B's patient by the seed
    same_key = {
        **vitals(1, 40, patient=OWNER["A"], temperature_c=37.0),
        "source_record_id": b_key,
    }
    correction = {
        **_retag(vitals(960, 41, patient=OWNER["A"], temperature_c=36.9), "c"),
        "supersedes": b_key,
        "correction_reason": "wrong bed",
    }
    retraction = {
        "kind": "retraction",
        "source_system": "monitor",
        "source_record_id": "c-retract",
        "patient": OWNER["A"],
        "at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "target_record_id": b_key,
        "reason": "wrong bed",
    }
    for body in (same_key, correction, retraction):
        reply = world.client.post("/v1/records", json=body, headers=key_a)
        assert reply.status_code == 409, reply.text
        assert OWNER["B"] not in reply.text
    with world.sessions() as session:
        stored = session.scalars(
            select(ClinicalRecord).where(
                ClinicalRecord.source_record_id.startswith(f"{b_key}#")
            )
        ).all()
    assert stored  # a vitals set is stored one row per value: <key>#<quantity>
    assert all(row.retracted_at is None for row in stored)


def test_a_bedside_key_enrols_only_in_its_units(world: World) -> None:
    key_a = world.keys["bedside-A"]
    auth = {"Authorization": f"Bearer {key_a}"}
    other = enrolment("P-C", care_unit=UNIT_B)
    reply = world.client.post("/v1/records", json=other, headers=auth)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["field"] == "care_unit"
    # The pseudonym of unit B's patient is taken: a conflict, never a second one.
    taken = enrolment(OWNER["B"], care_unit=UNIT_A, source_record_id="again")
    reply = world.client.post("/v1/records", json=taken, headers=auth)
    assert reply.status_code == 409
    assert OWNER["B"] not in reply.text
    mine = enrolment("P-D", care_unit=UNIT_A)
    assert world.client.post("/v1/records", json=mine, headers=auth).status_code == 201


def test_a_transfer_moves_the_patient_to_the_new_units_keys(world: World) -> None:
    key_a = {"Authorization": f"Bearer {world.keys['bedside-A']}"}
    key_b = {"Authorization": f"Bearer {world.keys['bedside-B']}"}
    transfer = {
        "kind": "transfer",
        "source_system": "adt",
        "source_record_id": "move-1",
        "patient": OWNER["A"],
        "transferred_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "care_unit": UNIT_B,
    }
    # A unit-bound key may not hand its patient to a unit it cannot see...
    refused = world.client.post("/v1/records", json=transfer, headers=key_a)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "care_unit"
    # ...an all-unit key (the ADT feed) may.
    reply = world.client.post(
        "/v1/records", json={**transfer, "source_record_id": "move-2"}
    )
    assert reply.status_code == 201, reply.text
    late = _retag(vitals(950, 70, patient=OWNER["A"], temperature_c=37.1), "t")
    assert world.client.post("/v1/records", json=late, headers=key_a).status_code == 422
    assert world.client.post("/v1/records", json=late, headers=key_b).status_code == 201


# ---------------------------------------------------------------- key attacks


def _with(world: World, key: str) -> int:
    reply = world.client.get("/v1/patients", headers={"Authorization": f"Bearer {key}"})
    return int(reply.status_code)


def test_key_attacks_are_refused_and_audited(world: World) -> None:
    good = world.keys["reviewer-all"]
    key_id, secret = parse(good) or ("", "")
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    attacks = {
        "tampered secret": f"crsmon_{key_id}_{flipped}",
        "unknown key id": f"crsmon_{MISSING_KEY}_{secret}",
        "malformed": "crsmon_not-a-key",
        "empty": "",
        "other scheme": None,
    }
    before = _security_events(world.sessions)
    for name, key in attacks.items():
        if key is None:
            reply = world.client.get(
                "/v1/patients", headers={"Authorization": f"Basic {good}"}
            )
            status = reply.status_code
        else:
            status = _with(world, key)
        assert status == 401, name
    assert _security_events(world.sessions) - before == len(attacks)
    assert _with(world, good) == 200


def test_expired_and_revoked_keys_stop_working_at_once(world: World) -> None:
    key = world.keys["reviewer-all"]
    key_id = (parse(key) or ("", ""))[0]
    assert _with(world, key) == 200
    with world.sessions.begin() as session:
        # Only the test reaches into the row; the API has no way to move expiry.
        session.execute(
            update(ApiKey)
            .where(ApiKey.key_id == key_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    reply = world.client.get("/v1/patients", headers={"Authorization": f"Bearer {key}"})
    assert reply.status_code == 401
    assert reply.json()["detail"][0]["reason"] == "the API key has expired"
    admin = {"Authorization": f"Bearer {world.keys['admin']}"}
    bedside = world.keys["bedside-A"]
    bedside_id = (parse(bedside) or ("", ""))[0]
    revoked = world.client.post(
        f"/v1/admin/keys/{bedside_id}/revoke", json={"reason": "lost"}, headers=admin
    )
    assert revoked.status_code == 200
    record = _retag(vitals(990, 45, patient=OWNER["A"], temperature_c=37.0), "r")
    reply = world.client.post(
        "/v1/records", json=record, headers={"Authorization": f"Bearer {bedside}"}
    )
    assert reply.status_code == 401
    assert reply.json()["detail"][0]["reason"] == "the API key was revoked"


def test_keys_are_shown_once_and_stored_hashed(world: World) -> None:
    admin = {"Authorization": f"Bearer {world.keys['admin']}"}
    made = world.client.post(
        "/v1/admin/keys",
        json={"name": "monitor gw 7", "role": "bedside", "units": [UNIT_A]},
        headers=admin,
    )
    assert made.status_code == 201
    text = made.json()["key"]
    listed = world.client.get("/v1/admin/keys", headers=admin)
    assert text not in listed.text
    secret = (parse(text) or ("", ""))[1]
    with world.sessions() as session:
        rows = session.scalars(select(ApiKey)).all()
    assert all(secret not in (r.secret_hash + r.name) for r in rows)
    assert _with(world, text) == 403  # a bedside key may not read patients


def test_rate_limit_answers_429_with_retry_after(
    make_client: MakeClient, api_database_url: str
) -> None:
    client = make_client(rate_limit="5/minute")
    keys = role_keys(api_database_url, Settings().pepper())
    auth = {"Authorization": f"Bearer {keys['reviewer']}"}
    statuses = [client.get("/v1/patients", headers=auth).status_code for _ in range(7)]
    assert statuses[:5] == [200] * 5
    assert statuses[5:] == [429, 429]
    reply = client.get("/v1/patients", headers=auth)
    assert int(reply.headers["Retry-After"]) >= 1
    # Another key has its own budget.
    other = {"Authorization": f"Bearer {keys['admin']}"}
    assert client.get("/v1/admin/keys", headers=other).status_code == 200


def test_production_refuses_to_start_without_its_secrets() -> None:
    with pytest.raises(ValueError, match="CRSMON_KEY_PEPPER"):
        Settings(mode="production")
    with pytest.raises(ValueError, match="32"):
        Settings(mode="production", key_pepper="short")
    assert Settings(mode="production", key_pepper="x" * 40).pepper() == "x" * 40
