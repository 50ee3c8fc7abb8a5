"""``crsmon keys`` and ``crsmon serve``'s embedded admin key, in process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from crsmon.auth.keys import parse
from crsmon.cli import main
from crsmon.db.audit import ADMIN, events
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.db.models import ApiKey


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'keys.sqlite3'}"
    upgrade(url)
    monkeypatch.setenv("CRSMON_DATABASE_URL", url)
    return url


def _rows(url: str) -> list[ApiKey]:
    engine = make_engine(url)
    try:
        with make_sessions(engine)() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))
    finally:
        engine.dispose()


def test_create_prints_the_key_once_and_stores_its_hash(database: str) -> None:
    made = CliRunner().invoke(
        main,
        ["keys", "create", "--name", "icu gw", "--role", "bedside", "--unit", "PICU"],
    )
    assert made.exit_code == 0, made.output
    text = made.stdout.strip()
    key_id, secret = parse(text) or ("", "")
    (row,) = _rows(database)
    assert (row.key_id, row.role, row.units) == (key_id, "bedside", ["PICU"])
    assert secret not in row.secret_hash
    listed = CliRunner().invoke(main, ["keys", "list", "--json"])
    (entry,) = [json.loads(line) for line in listed.output.splitlines()]
    assert entry["key_id"] == key_id
    assert secret not in listed.output
    table = CliRunner().invoke(main, ["keys", "list"])
    assert "active" in table.output


def test_revoke_needs_a_reason_and_is_audited(database: str) -> None:
    made = CliRunner().invoke(
        main, ["keys", "create", "--name", "dr a", "--role", "reviewer", "--unit", "*"]
    )
    key_id = (parse(made.stdout.strip()) or ("", ""))[0]
    revoked = CliRunner().invoke(main, ["keys", "revoke", key_id, "--reason", "left"])
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in CliRunner().invoke(main, ["keys", "list"]).output
    unknown = CliRunner().invoke(main, ["keys", "revoke", "0" * 12, "--reason", "x"])
    assert unknown.exit_code == 1
    assert "no such key" in unknown.output
    engine = make_engine(database)
    try:
        with make_sessions(engine)() as session:
            trail = events(session, chain=ADMIN)
    finally:
        engine.dispose()
    assert [(e.action, e.entity_id, e.actor.startswith("local:")) for e in trail] == [
        ("create", key_id, True),
        ("revoke", key_id, True),
    ]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--role", "bedside"], "--units"),
        (["--role", "reviewer", "--unit", ""], "--units"),
        (["--role", "admin", "--name", " "], "--name"),
    ],
)
def test_create_refuses_keys_that_would_not_work(
    database: str, args: list[str], field: str
) -> None:
    argv = ["keys", "create", *args]
    if "--name" not in args:
        argv += ["--name", "x"]
    refused = CliRunner().invoke(main, argv)
    assert refused.exit_code == 2
    assert field in refused.output
    assert _rows(database) == []


def test_analyst_and_admin_keys_are_study_wide(database: str) -> None:
    for role in ("analyst", "admin"):
        made = CliRunner().invoke(
            main, ["keys", "create", "--name", role, "--role", role, "--unit", "PICU"]
        )
        assert made.exit_code == 0
    assert [r.units for r in _rows(database)] == [["*"], ["*"]]


def test_embedded_serve_prints_a_local_admin_key_once(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "uvicorn.run",
        lambda app, **kw: started.append(kw),  # noqa: ARG005
    )
    first = CliRunner().invoke(main, ["serve", "--port", "8123"])
    assert first.exit_code == 0, first.output
    key = first.stderr.strip().splitlines()[-1]
    assert parse(key) is not None
    second = CliRunner().invoke(main, ["serve", "--port", "8123"])
    assert "admin key" not in second.stderr
    assert [r.role for r in _rows(database)] == ["admin"]
    assert started[0]["access_log"] is False
    production = CliRunner().invoke(main, ["serve"], env={"CRSMON_MODE": "production"})
    assert production.exit_code != 0
    assert "CRSMON_KEY_PEPPER" in str(production.exception)
