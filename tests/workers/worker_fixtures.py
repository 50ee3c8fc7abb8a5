"""Fixtures for the worker tests: real SQLite files, a fresh PostgreSQL database
on the machine's server, and a private redis-server per test.

Loaded by each worker test module with ``pytest_plugins = ["worker_fixtures"]``
rather than from a ``conftest.py``: the test folders have no ``__init__.py``, so
mypy would see two modules named ``conftest`` (``tests/integration`` has one).
The fixture names start with ``worker_`` because a plugin's fixtures are
visible to the whole test session.

PostgreSQL is the machine's server on 127.0.0.1:5432 (trust auth); each test
session creates its own uniquely named database and drops it afterwards (copied
from ``tests/integration/conftest.py``). Redis is never the machine's server:
tests that need a broker start their own ``redis-server`` on a free loopback
port, without persistence, and kill it afterwards, even when they fail. Missing
services skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import Processes, RedisServer, processes, require, start_redis

from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def worker_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session."""
    require(_pg_available(), "PostgreSQL is not answering on 127.0.0.1:5432")
    name = f"crsmon_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset(url: str) -> str:
    admin_url = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def worker_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend (PostgreSQL: reset per test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crsmon.sqlite3'}"
    url: str = request.getfixturevalue("worker_postgres_url")
    return _reset(url)


@pytest.fixture
def worker_engine(worker_database_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head, disposed after the test."""
    upgrade(worker_database_url)
    engine = make_engine(worker_database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def worker_sessions(worker_engine: Engine) -> sessionmaker[Session]:
    """A session factory on the migrated database."""
    return make_sessions(worker_engine)


@pytest.fixture
def worker_pg_url(worker_postgres_url: str) -> str:
    """The session's PostgreSQL database, emptied and migrated to head."""
    upgrade(_reset(worker_postgres_url))
    return worker_postgres_url


@pytest.fixture
def worker_pg_sessions(worker_pg_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on :func:`worker_pg_url` (the workers' database)."""
    engine = make_engine(worker_pg_url)
    try:
        yield make_sessions(engine)
    finally:
        engine.dispose()


@pytest.fixture
def worker_procs(tmp_path: Path) -> Iterator[Processes]:
    """Processes started by the test; every process group is SIGKILLed afterwards."""
    with processes(tmp_path) as owned:
        yield owned


@pytest.fixture
def worker_redis(worker_procs: Processes, tmp_path: Path) -> RedisServer:
    """A private redis-server (free loopback port, no persistence), killed after."""
    data = tmp_path / "redis"
    data.mkdir()
    return start_redis(worker_procs, data)
