"""One typed settings object, read from ``CRSMON_*`` environment variables at the edge.

Nothing reads the environment at import time: the CLI, the API factory and the
worker factory call :func:`load_settings` once and pass the object down; tests
build ``Settings(...)`` directly.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """crsmon configuration; every field can be set as ``CRSMON_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CRSMON_", extra="forbid")

    database_url: str = Field(
        default="sqlite:///crsmon.sqlite3",
        description="SQLAlchemy URL; the embedded default is a SQLite file.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker (redis://...). None: tasks run in process.",
    )
    rule_set: str = Field(default="astct-2019", description="Live grading rule set.")
    stale_monitoring_h: float = Field(default=8.0, gt=0)
    max_grading_attempts: int = Field(default=5, ge=1)
    sweep_pending_after_s: float = Field(default=30.0, gt=0)
    max_batch_records: int = Field(default=1000, ge=1)


def load_settings() -> Settings:
    """Settings from the environment (call at the edge, once)."""
    return Settings()
