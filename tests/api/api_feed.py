"""Feed builders and helpers for the API tests (fixtures: ``api_fixtures``).

Times are built relative to the real clock: the intake refuses anything more
than five minutes ahead of the server.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.auth.policy import POLICY, ROLES
from crsmon.db.audit import Actor
from crsmon.db.engine import make_engine, make_sessions
from crsmon.services.keys import create_key

with warnings.catch_warnings():
    # Starlette asks for httpx2; the project pins httpx, which still works.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient as TestClient


class AuthClient(TestClient):
    """A test client that authenticates as the role the access policy allows.

    A request without an ``Authorization`` header gets the key of the first
    role the policy table allows for its route (every key here covers all
    units), so tests of behaviour need not repeat credentials. Tests of access
    itself send their own header (an empty one: no credential).
    """

    def __init__(self, app: Any, keys: dict[str, str]) -> None:
        super().__init__(app)
        self.keys = keys

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        """Send, with the route's role key unless a header was given."""
        headers = dict(kwargs.pop("headers", None) or {})
        given = {k for k in headers if k.lower() == "authorization"}
        if any(headers[k] == "" for k in given):
            # An empty header asks for no credential at all.
            headers = {k: v for k, v in headers.items() if k not in given}
        elif not given:
            role = role_for(method, str(url))
            if role is not None:
                headers["Authorization"] = f"Bearer {self.keys[role]}"
        return super().request(method, url, *args, headers=headers, **kwargs)


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(path)) + "$")


_ROUTES = [(rule, _template(rule.path)) for rule in POLICY]


def role_for(method: str, url: str) -> str | None:
    """The first role the policy allows for a request (None: public or unknown)."""
    path = urlsplit(url).path
    for rule, pattern in _ROUTES:
        if rule.method == method.upper() and pattern.match(path):
            return None if rule.public else sorted(rule.roles)[0]
    return None


INFUSION = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
PATIENT = "P-0001"

MakeClient = Callable[..., TestClient]


def at(hours: float) -> str:
    """An ISO time ``hours`` after the infusion (3 days ago)."""
    return (INFUSION + timedelta(hours=hours)).isoformat()


def enrolment(patient: str = PATIENT, **fields: Any) -> dict[str, Any]:
    """A ``patient`` record: a 9-year-old on the PICU, infused 3 days ago."""
    return {
        "kind": "patient",
        "source_system": "ehr",
        "source_record_id": f"enrol-{patient}",
        "patient": patient,
        "age_years": 9.0,
        "weight_kg": 30.0,
        "care_unit": "PICU",
        "product": {
            "name": "tisagenlecleucel",
            "dose_cells_per_kg": 2e6,
            "viability_pct": 90.0,
        },
        "infusion_at": at(0),
        **fields,
    }


def record(
    kind: str, n: int, *, patient: str = PATIENT, **fields: Any
) -> dict[str, Any]:
    """A clinical record of the bedside monitor, id ``m-<n>``."""
    return {
        "kind": kind,
        "source_system": "monitor",
        "source_record_id": f"m-{n}",
        "patient": patient,
        **fields,
    }


def vitals(
    n: int, hours: float, *, patient: str = PATIENT, **values: Any
) -> dict[str, Any]:
    """A vitals set observed ``hours`` after infusion."""
    return record("vitals", n, patient=patient, observed_at=at(hours), **values)


def count(sessions: sessionmaker[Session], model: type[Any], *where: Any) -> int:
    """Rows of ``model`` (matching ``where``)."""
    with sessions() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int(session.scalar(query) or 0)


def escalating(patient: str = PATIENT) -> list[dict[str, Any]]:
    """Fever at 20 h (grade 1), hypotension at 26 h (2), a pressor at 32 h (3)."""
    return [
        enrolment(patient),
        vitals(1, 20, patient=patient, temperature_c=38.9, sbp_mmhg=100, dbp_mmhg=58),
        vitals(2, 26, patient=patient, temperature_c=39.4, sbp_mmhg=84, dbp_mmhg=40),
        record(
            "vasopressor_start",
            3,
            patient=patient,
            started_at=at(32),
            drug="norepinephrine",
            dose=0.05,
            unit="ug/kg/min",
        ),
        vitals(4, 33, patient=patient, temperature_c=37.2, sbp_mmhg=92, dbp_mmhg=50),
    ]


def role_keys(
    database_url: str, pepper: str, units: list[str] | None = None
) -> dict[str, str]:
    """One fresh key per role (all units unless ``units``), by role."""
    engine = make_engine(database_url)
    try:
        with make_sessions(engine).begin() as session:
            return {
                role: create_key(
                    session,
                    name=f"test {role}",
                    role=role,
                    units=units or ["*"],
                    expires_at=None,
                    actor=Actor("test", "test"),
                    now=datetime.now(UTC),
                    pepper=pepper,
                )[1]
                for role in ROLES
            }
    finally:
        engine.dispose()
