"""One typed settings object, read from ``CRSMON_*`` environment variables at the edge.

Nothing reads the environment at import time: the CLI, the API factory and the
worker factory call :func:`load_settings` once and pass the object down; tests
build ``Settings(...)`` directly.
"""

from __future__ import annotations

from pydantic import Field, model_validator
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
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    sweep_interval_s: float = Field(default=15.0, gt=0)
    visibility_timeout_s: int = Field(default=300, ge=10)
    task_time_limit_s: int = Field(default=60, ge=1)
    webhook_urls: list[str] = Field(default_factory=list)
    webhook_secret: str | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _time_limit_below_visibility(self) -> Settings:
        # A task still running when its message becomes visible again would run
        # twice (reliability.md §1.2, F6).
        if self.task_time_limit_s >= self.visibility_timeout_s:
            raise ValueError("task_time_limit_s must be below visibility_timeout_s")
        return self


def load_settings() -> Settings:
    """Settings from the environment (call at the edge, once)."""
    return Settings()
