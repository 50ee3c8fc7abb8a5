"""Least-privilege grants for the application's PostgreSQL role (reliability.md §2.3).

Migrations run as the owner role; the API and workers should connect as an
application role that may read and write clinical tables but cannot rewrite
history. :func:`grant_app_role` gives such a role exactly that:

- SELECT and INSERT everywhere, UPDATE and DELETE only where the service
  changes state (grading state, alert acknowledgement, webhook outbox, unit
  stays, keys' revocation);
- no UPDATE, DELETE or TRUNCATE on ``audit_events``, ``grades``, ``inbound_items`` and
  ``adjudications`` (append-only, also refused by triggers for every role);
- on ``clinical_records`` and ``patients``, UPDATE of the state columns only
  (the values themselves are never updated in place).

SQLite has no roles: its triggers are the enforcement there.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, text

APPEND_ONLY = ("audit_events", "grades", "adjudications", "inbound_items")
UPDATABLE_COLUMNS = {
    "clinical_records": (
        "grading_state",
        "attempts",
        "last_error",
        "graded_at",
        "retracted_at",
        "retraction_reason",
        "lease_token",
        "lease_until",
    ),
    "patients": ("scope_unit",),
}
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_app_role(engine: Engine, role: str) -> list[str]:
    """Grant ``role`` the application's privileges; the statements run.

    Raises:
        ValueError: not PostgreSQL, or not a plain lower-case role name.
    """
    if engine.dialect.name != "postgresql":
        raise ValueError("grants are for PostgreSQL (SQLite is guarded by triggers)")
    if not _ROLE.match(role):
        raise ValueError("role: a plain lower-case PostgreSQL identifier")
    quoted = f'"{role}"'
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {quoted}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
        f"TO {quoted}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
        f"REVOKE UPDATE, DELETE ON {', '.join(APPEND_ONLY)} FROM {quoted}",
        f"REVOKE DELETE ON clinical_records, patients FROM {quoted}",
    ]
    for table, columns in UPDATABLE_COLUMNS.items():
        statements.append(f"REVOKE UPDATE ON {table} FROM {quoted}")
        statements.append(f"GRANT UPDATE ({', '.join(columns)}) ON {table} TO {quoted}")
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    return statements
