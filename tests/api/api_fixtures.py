"""Fixtures of the API tests: ``pytest_plugins = ("api_fixtures",)`` loads them.

The databases come from ``tests/conftest.py`` (a SQLite file and the real
PostgreSQL, which fails under ``CI=true`` when absent), migrated to head as
``crsmon db upgrade`` would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from api_feed import AuthClient, MakeClient, TestClient, role_keys
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.app import DispatcherFactory, create_app
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.settings import Settings


@pytest.fixture
def api_database_url(database_url: str) -> str:
    """An empty database of each backend, migrated to head (as `crsmon db upgrade`)."""
    upgrade(database_url)
    return database_url


@pytest.fixture
def make_client(api_database_url: str) -> Iterator[MakeClient]:
    """Build a started app on the test database: ``make_client(**settings)``."""
    with ExitStack() as stack:

        def make(
            dispatcher_factory: DispatcherFactory | None = None, **overrides: Any
        ) -> TestClient:
            fields = {"database_url": api_database_url, "broker_url": None}
            settings = Settings(**(fields | overrides))
            app = create_app(settings, dispatcher_factory)
            keys = role_keys(api_database_url, settings.pepper())
            return stack.enter_context(AuthClient(app, keys))

        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    """A started app with the default settings (in-process grading)."""
    return make_client()


@pytest.fixture
def db_sessions(api_database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test database, to look behind the API."""
    engine = make_engine(api_database_url)
    try:
        yield make_sessions(engine)
    finally:
        engine.dispose()
