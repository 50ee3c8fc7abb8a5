"""The access policy: which roles may call which route, and how it is scoped.

This table is the single source of truth. The API's authorization dependency
looks every request up here (a route missing from it is refused for everyone:
deny by default), the OpenAPI document's ``security`` comes from it, and the
authorization matrix test (tests/security/test_authz_matrix.py) checks every
route x role x object cell against it. docs/security.md shows it.

Scopes:
- ``public``: no credential (liveness and readiness probes only);
- ``unit``: the caller's care units bound every query (another unit's patient
  answers exactly like a missing one);
- ``study``: study-wide, pseudonymous research tables and aggregates;
- ``admin``: keys, units and the audit trail (no clinical data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["bedside", "reviewer", "analyst", "admin"]
ROLES: tuple[Role, ...] = ("bedside", "reviewer", "analyst", "admin")
Scope = Literal["public", "unit", "study", "admin"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One route's access rule."""

    method: str
    path: str
    roles: frozenset[Role]
    scope: Scope
    why: str

    @property
    def public(self) -> bool:
        """Whether the route needs no credential."""
        return self.scope == "public"


def _rule(method: str, path: str, roles: str, scope: Scope, why: str) -> Rule:
    named = frozenset(r for r in ROLES if r in roles.split())
    return Rule(method, path, named, scope, why)


POLICY: tuple[Rule, ...] = (
    _rule("GET", "/health/live", "", "public", "liveness probe"),
    _rule("GET", "/health/ready", "", "public", "readiness probe"),
    _rule("GET", "/metrics", "admin", "admin", "Prometheus scrape (counts only)"),
    _rule("POST", "/v1/records", "bedside", "unit", "feed records for its units"),
    _rule("POST", "/v1/records/batch", "bedside", "unit", "NDJSON batch"),
    _rule("POST", "/fhir/Observation", "bedside", "unit", "FHIR vital signs, labs"),
    _rule(
        "POST", "/fhir/MedicationAdministration", "bedside", "unit", "FHIR drugs given"
    ),
    _rule("POST", "/fhir", "bedside", "unit", "FHIR batch or transaction Bundle"),
    _rule("GET", "/v1/patients", "reviewer", "unit", "patients of its units"),
    _rule("GET", "/v1/patients/{pseudonym}", "reviewer", "unit", "one patient"),
    _rule("GET", "/v1/patients/{pseudonym}/grades", "reviewer", "unit", "grades"),
    _rule("GET", "/v1/patients/{pseudonym}/timeline", "reviewer", "unit", "timeline"),
    _rule("GET", "/v1/patients/{pseudonym}/timeline.png", "reviewer", "unit", "plot"),
    _rule(
        "GET", "/v1/patients/{pseudonym}/adjudications", "reviewer", "unit", "verdicts"
    ),
    _rule(
        "POST",
        "/v1/patients/{pseudonym}/adjudications",
        "reviewer",
        "unit",
        "confirm or override the maximum grade",
    ),
    _rule("GET", "/cds-services", "reviewer", "unit", "CDS Hooks discovery"),
    _rule(
        "POST", "/cds-services/crsmon-crs", "reviewer", "unit", "cards of open alerts"
    ),
    _rule(
        "POST",
        "/cds-services/crsmon-crs/feedback",
        "reviewer",
        "unit",
        "card accepted or overridden: acknowledges",
    ),
    _rule("GET", "/v1/alerts", "reviewer", "unit", "alerts of its units"),
    _rule("GET", "/v1/alerts/{alert_id}", "reviewer", "unit", "one alert"),
    _rule(
        "POST", "/v1/alerts/{alert_id}/acknowledge", "reviewer", "unit", "acknowledge"
    ),
    _rule("GET", "/v1/review/patients", "reviewer", "unit", "who has CRS now"),
    _rule("GET", "/v1/review/alerts", "reviewer", "unit", "open alerts by kind"),
    _rule("GET", "/v1/review/cohort", "analyst", "study", "cohort summary"),
    _rule("GET", "/v1/exports/{table}", "analyst", "study", "pseudonymous tables"),
    _rule("GET", "/v1/exports/{table}/dictionary", "analyst", "study", "columns"),
    _rule("GET", "/v1/admin/keys", "admin", "admin", "list keys (no secrets)"),
    _rule("POST", "/v1/admin/keys", "admin", "admin", "create a key (shown once)"),
    _rule("POST", "/v1/admin/keys/{key_id}/revoke", "admin", "admin", "revoke"),
    _rule("GET", "/v1/admin/audit/verify", "admin", "admin", "verify the chains"),
)

_BY_ROUTE = {(r.method, r.path): r for r in POLICY}


def rule_for(method: str, path: str) -> Rule | None:
    """The rule of a route template (``/v1/patients/{pseudonym}``); None: denied."""
    return _BY_ROUTE.get((method.upper(), path))


def allowed(rule: Rule | None, role: str) -> bool:
    """Whether ``role`` may call the route (a missing rule allows no one)."""
    return rule is not None and (rule.public or role in rule.roles)


def markdown_table() -> str:
    """The policy as the Markdown table docs/security.md shows (test-checked)."""
    lines = [
        "| method | route | bedside | reviewer | analyst | admin | scope | what |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rule in POLICY:
        marks = [
            "public" if rule.public else ("yes" if role in rule.roles else "")
            for role in ROLES
        ]
        lines.append(
            f"| {rule.method} | `{rule.path}` | {' | '.join(marks)} "
            f"| {rule.scope} | {rule.why} |"
        )
    return "\n".join(lines)
