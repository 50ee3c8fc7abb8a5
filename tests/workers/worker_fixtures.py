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

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import reset_schema
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import Processes, RedisServer, processes, start_redis

from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade


@pytest.fixture(scope="session")
def worker_postgres_url(postgres_url: str) -> str:
    """The session's PostgreSQL database (``tests/conftest.py``)."""
    return postgres_url


@pytest.fixture
def worker_database_url(database_url: str) -> str:
    """An empty database of each backend (``tests/conftest.py``)."""
    return database_url


@pytest.fixture
def worker_engine(migrated_engine: Engine) -> Engine:
    """An engine on a database migrated to head (``tests/conftest.py``)."""
    return migrated_engine


@pytest.fixture
def worker_sessions(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """A session factory on the migrated database (``tests/conftest.py``)."""
    return sessions


@pytest.fixture
def worker_pg_url(worker_postgres_url: str) -> str:
    """The session's PostgreSQL database, emptied and migrated to head."""
    upgrade(reset_schema(worker_postgres_url))
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
