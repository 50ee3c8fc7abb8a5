"""T7 (reliability.md §4.5): Schemathesis contract and negative testing.

Schemathesis generates requests from the app's own OpenAPI document and sends
them to the in-process ASGI app: every operation x every caller x both
generation modes, one test item each.

- Callers: no credential, a bedside key of unit A, a reviewer key of every
  unit, an analyst key, an admin key (each sends its own Authorization header).
- Modes: ``positive`` (data the document allows) and ``negative`` (data that
  violates it). An operation with nothing to negate (no parameter, no body)
  runs positive only.
- The caller an operation admits gets Schemathesis' coverage phase (boundary
  values; each parameter and property missing, of a wrong type, out of
  bounds; methods the path does not have) and then ``CRSMON_CONTRACT_EXAMPLES``
  generated cases per mode; in positive mode half the draws of an operation
  with a path parameter use a real pseudonym, alert id or revocable key id,
  so handlers run on real objects and not only on 404s. A refused caller,
  whose answer must not depend on the input, gets a tenth of that (at least
  5) generated cases per mode.

Every response must pass Schemathesis' ``not_a_server_error`` (no 5xx),
``status_code_conformance`` (documented statuses only; the document lists
401/403/429 on protected operations and 422 for validation),
``content_type_conformance``, ``response_headers_conformance``,
``response_schema_conformance`` (JSON bodies against their schema; the CSV and
Parquet exports, the PNG timeline and the Prometheus text are checked for
their documented media type only) and ``negative_data_rejection`` (every
schema-invalid request answered 4xx); and the access policy, read from the
document (``security``, ``x-crsmon-roles``, both built from
crsmon/auth/policy.py): no credential on a protected operation is 401 with
``WWW-Authenticate``, a role the operation does not list is 403, and a listed
role is never refused with 401/403. (Schemathesis' ``ignored_auth`` and
``missing_required_header`` add nothing here: the anonymous caller covers a
missing credential on every operation, and no header parameter is declared.)

Data: a migrated SQLite database seeded through the API with two patients
(units A and B) on the escalating feed, so grades, alerts and adjudications
exist; rate limit raised so nothing is throttled. SQLite only: the
authorization matrix (T9) and the API suites run every route on PostgreSQL.

Budget: ``CRSMON_CONTRACT_EXAMPLES`` (default 50: 100 generated cases per
operation from its admitted caller, plus up to 100 coverage cases and 40 from
the refused callers) keeps the file near 90 s on the 2-core CI machine; the
nightly run sets ``CRSMON_CONTRACT_EXAMPLES=500``. Generation is derandomized
with no example database, so a run is reproducible.

Exclusions, each narrow:

1. ``POST /v1/records/batch`` skips ``negative_data_rejection``. Its body is
   NDJSON text, documented as ``type: string``: whatever Schemathesis puts in
   its place (a number, an array) goes over the wire as text, which is a valid
   string again, and each line is refused on its own in a 200 reply by design.
2. FastAPI reads a JSON body model before any dependency runs, so the four
   operations with one (acknowledge, adjudicate, create and revoke a key)
   answer a body that is not readable JSON with 400 or 422 *before*
   authorization: a refused caller gets 400/422 instead of 401/403, and the
   refusal is not audited as a denial (nothing is read or written). Accepted
   for exactly that case only: a refused caller, one of those operations, a
   JSON content type and a body that does not decode as JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import hypothesis
import pytest
import schemathesis
from api_feed import (  # type: ignore[import-not-found, unused-ignore]
    enrolment,
    escalating,
)
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.app import create_app
from crsmon.auth.policy import POLICY
from crsmon.db.audit import Actor
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.db.models import Alert, Patient
from crsmon.services.keys import create_key
from crsmon.settings import Settings

EXAMPLES = int(os.environ.get("CRSMON_CONTRACT_EXAMPLES", "50"))
"""Generated cases (and at most as many coverage cases) per operation and
mode for the caller the operation admits."""
REFUSED_EXAMPLES = max(5, EXAMPLES // 10)
"""Generated cases per operation and mode for each caller it refuses."""

UNIT_A, UNIT_B = "PICU-A", "PICU-B"
PATIENTS = {"P-A": UNIT_A, "P-B": UNIT_B}

# The batch body is NDJSON text: send whatever is generated for it as text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@dataclass(frozen=True)
class Caller:
    """Who calls: a name, a role (None: no credential) and care units."""

    name: str
    role: str | None
    units: tuple[str, ...] = ()


CALLERS = (
    Caller("anonymous", None),
    Caller("bedside-A", "bedside", (UNIT_A,)),
    Caller("reviewer", "reviewer", ("*",)),
    Caller("analyst", "analyst", ("*",)),
    Caller("admin", "admin", ("*",)),
)


def _document() -> dict[str, Any]:
    """The OpenAPI document, from an app on a database it never opens."""
    app = create_app(
        Settings(database_url="sqlite://", broker_url=None, risk_model_dir=None)
    )
    return app.openapi()


DOCUMENT = _document()
CONFIG = schemathesis.Config.from_dict(
    {
        # The callers' credentials are set explicitly (none for "anonymous").
        "generation": {"with-security-parameters": False},
        # Schema-invalid input must be refused by the app: any 4xx, never 5xx.
        "checks": {"negative_data_rejection": {"expected-statuses": ["4xx"]}},
    }
)
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)

CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
NDJSON_BATCH = ("POST", "/v1/records/batch")
"""Exclusion 1 (module docstring): no negative-data rejection for NDJSON text."""
BODY_READ_BEFORE_AUTH = {
    ("POST", "/v1/alerts/{alert_id}/acknowledge"),
    ("POST", "/v1/patients/{pseudonym}/adjudications"),
    ("POST", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys/{key_id}/revoke"),
}
"""Exclusion 2 (module docstring): FastAPI reads these JSON bodies before
authorization runs, so an unreadable body gets 400/422 before 401/403."""


def _operation(method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = DOCUMENT["paths"][path][method.lower()]
    return operation


def _negatable(method: str, path: str) -> bool:
    """Whether the operation has anything to negate (a parameter or a body)."""
    operation = _operation(method, path)
    return bool(operation.get("parameters") or operation.get("requestBody"))


def _admits(method: str, path: str, caller: Caller) -> bool | None:
    """None: public; else whether the document's roles list the caller's role."""
    operation = _operation(method, path)
    if operation.get("security") == []:
        return None
    return caller.role in operation.get("x-crsmon-roles", [])


CELLS = [
    pytest.param(
        rule.method,
        rule.path,
        caller,
        mode,
        id=f"{rule.method} {rule.path}-{caller.name}-{mode.value}",
    )
    for rule in POLICY
    for caller in CALLERS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _negatable(rule.method, rule.path)
]


# ---------------------------------------------------------------- the world


@dataclass
class World:
    """The app on a seeded SQLite database, and each caller's credential."""

    app: Any
    headers: dict[str, dict[str, str]]
    """Each caller's headers: its Authorization (none for "anonymous")."""
    objects: dict[str, list[Any]]
    """Real values of each path parameter: pseudonyms, alert ids, key ids."""


def _key(
    sessions: sessionmaker[Session],
    settings: Settings,
    name: str,
    role: str,
    units: list[str],
) -> tuple[str, str]:
    """A new key: its id and its full text."""
    with sessions.begin() as session:
        row, text = create_key(
            session,
            name=name,
            role=role,
            units=units,
            expires_at=None,
            actor=Actor("test", "test"),
            now=datetime.now(UTC),
            pepper=settings.pepper(),
        )
        return row.key_id, text


def _seed(app: Any, bedside: str, reviewer: str) -> None:
    """Two patients on the escalating feed (grades, alerts), one verdict each.

    Sent with the client Schemathesis uses (it starts the app's lifespan once).
    """
    with asgi.get_client(app) as client:
        for patient, unit in PATIENTS.items():
            feed = escalating(patient)
            feed[0] = enrolment(patient, care_unit=unit)
            for record in feed:
                tagged = {
                    **record,
                    "source_record_id": f"{patient}-{record['source_record_id']}",
                }
                reply = client.post(
                    "/v1/records", json=tagged, headers=_bearer(bedside)
                )
                assert reply.status_code == 201, reply.text
            verdict = {"decision": "confirm", "reason": "seeded", "by": "tester"}
            reply = client.post(
                f"/v1/patients/{patient}/adjudications",
                json=verdict,
                headers=_bearer(reviewer),
            )
            assert reply.status_code == 201, reply.text


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The app on a migrated, seeded SQLite file, for the whole module."""
    url = f"sqlite:///{tmp_path_factory.mktemp('contract') / 'crsmon.sqlite3'}"
    upgrade(url)
    # Schemathesis must never be throttled: the contract is not about 429.
    settings = Settings(database_url=url, broker_url=None, rate_limit="1000000/minute")
    app = create_app(settings)
    engine = make_engine(url)
    sessions = make_sessions(engine)
    keys = {
        caller.name: _key(
            sessions, settings, caller.name, caller.role, [*caller.units]
        )[1]
        for caller in CALLERS
        if caller.role is not None
    }
    seeder = _key(sessions, settings, "seeder", "bedside", ["*"])[1]
    _seed(app, seeder, keys["reviewer"])
    headers = {name: _bearer(key) for name, key in keys.items()}
    headers["anonymous"] = {}
    spare = [
        _key(sessions, settings, f"spare-{n}", "bedside", [UNIT_A])[0] for n in range(4)
    ]
    with sessions() as session:
        alerts = list(session.scalars(select(Alert.id).order_by(Alert.id)))
        pseudonyms = list(session.scalars(select(Patient.pseudonym)))
    assert alerts, "the escalating feed raises alerts"
    objects: dict[str, list[Any]] = {
        "pseudonym": pseudonyms,
        "alert_id": alerts,
        "key_id": spare,
    }
    try:
        yield World(app, headers, objects)
    finally:
        engine.dispose()
        app.state.crsmon.engine.dispose()


# ---------------------------------------------------------------- the checks


def _unreadable_json(response: schemathesis.Response) -> bool:
    """Whether the request had a JSON content type and a body that is not JSON."""
    request = response.request
    media = str(request.headers.get("Content-Type") or "")
    media = media.split(";")[0].strip().lower()
    if not (media == "application/json" or media.endswith("+json")):
        return False
    body = request.body
    if not isinstance(body, str | bytes) or not body:
        return False
    try:
        json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        return True
    return False


def _check_access(
    method: str, path: str, caller: Caller, response: schemathesis.Response
) -> None:
    """The answer the access policy (as documented) requires of this caller."""
    admitted = _admits(method, path, caller)
    status = response.status_code
    text = response.content[:200].decode("utf-8", "replace")
    where = f"{method} {path} as {caller.name}: {status} {text}"
    if admitted is None:
        assert status not in (401, 403), where
        return
    if admitted:
        assert status not in (401, 403), where
        return
    if (method, path) in BODY_READ_BEFORE_AUTH and _unreadable_json(response):
        assert status in (400, 422), where  # exclusion 2 (module docstring)
        return
    if caller.role is None:
        assert status == 401, where
        challenge = response.headers.get("www-authenticate", [""])[0]
        assert challenge.startswith("Bearer"), where
    else:
        assert status == 403, where


def _strategy(
    world: World, method: str, path: str, caller: Caller, mode: GenerationMode
) -> st.SearchStrategy[Case[Any]]:
    """Generated cases; in positive mode, half of them on real objects."""
    operation = SCHEMA[path][method]
    headers = world.headers[caller.name]
    generated = operation.as_strategy(generation_mode=mode, headers=headers)
    names = [p["name"] for p in _operation(method, path).get("parameters", [])]
    real = [name for name in names if name in world.objects]
    if mode is GenerationMode.NEGATIVE or not real:
        return generated
    name = real[0]
    on_objects = [
        operation.as_strategy(
            generation_mode=mode, headers=headers, path_parameters={name: value}
        )
        for value in world.objects[name]
    ]
    return st.one_of(generated, st.one_of(on_objects))


def _coverage_cases(
    world: World, method: str, path: str, caller: Caller, mode: GenerationMode
) -> list[Case[Any]]:
    """Schemathesis' coverage phase: deterministic boundary values, each
    parameter and property missing, of a wrong type, over its bounds... and the
    methods the path does not have. At most ``EXAMPLES``, evenly spread."""
    operation = SCHEMA[path][method]
    cases = list(
        SCHEMA.iter_coverage_cases(
            operation,
            generation_modes=[mode],
            generation_config=SCHEMA.config.generation,
        )
    )
    if len(cases) > EXAMPLES:
        cases = [cases[i * len(cases) // EXAMPLES] for i in range(EXAMPLES)]
    for case in cases:
        case.headers.update(world.headers[caller.name])
    return cases


def _settings(examples: int) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        phases=(
            hypothesis.Phase.explicit,
            hypothesis.Phase.generate,
            hypothesis.Phase.shrink,
        ),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )


# ---------------------------------------------------------------- the tests


def test_the_document_is_the_apps_and_covers_the_policy(world: World) -> None:
    """The tested document is the served one, and every policy route is in it."""
    assert world.app.openapi() == DOCUMENT
    operations = {
        (method.upper(), path) for path, methods in SCHEMA.items() for method in methods
    }
    assert operations == {(rule.method, rule.path) for rule in POLICY}


@pytest.mark.parametrize(("method", "path", "caller", "mode"), CELLS)
def test_contract(
    world: World, method: str, path: str, caller: Caller, mode: GenerationMode
) -> None:
    """One operation, one caller, one mode: every response passes every check.

    The caller the operation admits gets the coverage phase, then ``EXAMPLES``
    generated cases; a refused caller gets ``REFUSED_EXAMPLES`` generated ones.
    """
    admitted = _admits(method, path, caller)
    excluded: list[CheckFunction] = []
    if (method, path) == NDJSON_BATCH:
        excluded.append(negative_data_rejection)  # exclusion 1 (module docstring)
    sent: list[int] = []

    def send(case: Case[Any]) -> None:
        response = case.call_and_validate(
            app=world.app, checks=CHECKS, excluded_checks=excluded
        )
        sent.append(response.status_code)
        # A probe with a method the path does not have reaches no operation.
        if case.method.upper() == method:
            _check_access(method, path, caller, response)

    if admitted is not False:
        for case in _coverage_cases(world, method, path, caller, mode):
            try:
                send(case)
            except BaseException as exc:
                data = case.meta.phase.data if case.meta else None
                exc.add_note(f"coverage phase: {getattr(data, 'description', '')}")
                raise

    @_settings(EXAMPLES if admitted is not False else REFUSED_EXAMPLES)
    @hypothesis.given(case=_strategy(world, method, path, caller, mode))
    def run(case: Case[Any]) -> None:
        send(case)

    run()
    assert sent, "no request was sent"
