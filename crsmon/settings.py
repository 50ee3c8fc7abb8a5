"""One typed settings object, read from ``CRSMON_*`` environment variables at the edge.

Nothing reads the environment at import time: the CLI, the API factory and the
worker factory call :func:`load_settings` once and pass the object down; tests
build ``Settings(...)`` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models"
"""The models trained and shipped with crsmon (``models/`` beside the package)."""
MAX_WEBHOOK_URL_CHARS = 500
"""The width of ``webhook_deliveries.url``."""
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
"""Plain http is accepted only to a receiver on this machine (e.g. a relay)."""


class Settings(BaseSettings):
    """crsmon configuration; every field can be set as ``CRSMON_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CRSMON_", extra="forbid")

    mode: Literal["embedded", "production"] = Field(
        default="embedded",
        description="production refuses to start without its secrets "
        "(key_pepper) and hides the interactive API docs.",
    )
    key_pepper: SecretStr | None = Field(
        default=None,
        description="Server secret mixed into every stored API-key hash "
        "(required in production; changing it invalidates every key).",
    )
    rate_limit: str = Field(
        default="1200/minute",
        description="Requests per API key (or per client address before "
        "authentication), in the limits library's notation; 429 beyond it.",
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where the rate-limit counters live: memory:// (one "
        "process) or redis://... (shared by every API process).",
    )
    database_url: str = Field(
        default="sqlite:///crsmon.sqlite3",
        description="SQLAlchemy URL; the embedded default is a SQLite file.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker (redis://...). None: tasks run in process.",
    )
    rule_set: str = Field(default="astct-2019", description="Live grading rule set.")
    hl7_facilities: list[str] = Field(
        default_factory=list,
        description="HL7 v2 sending facilities (MSH-4) whose messages are taken; "
        "any other is answered AR. Empty: none (JSON list in the environment).",
    )
    stale_monitoring_h: float = Field(
        default=8.0,
        gt=0,
        description="Hours without temperature or blood pressure that raise "
        "stale_monitoring, during the monitoring window.",
    )
    monitoring_days: float = Field(
        default=14.0, ge=0, description="Days after infusion watched for stale data."
    )
    max_grading_attempts: int = Field(default=5, ge=1)
    grading_batch: int = Field(
        default=32,
        ge=1,
        le=500,
        description="Patients per grading message: graded in one transaction, "
        "risk-scored in one model call (a failing batch is split into one "
        "message per patient).",
    )
    sweep_pending_after_s: float = Field(default=30.0, gt=0)
    max_batch_records: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    sweep_interval_s: float = Field(default=15.0, gt=0)
    visibility_timeout_s: int = Field(default=300, ge=10)
    task_time_limit_s: int = Field(default=60, ge=1)
    risk_model_dir: Path | None = Field(
        default=SHIPPED_MODELS,
        description="Directory of the risk models (dynamic_48h.json and its .skops). "
        "Empty: no risk scoring (the service runs and says so in /health/ready).",
    )
    risk_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="high_risk alert threshold; default: the model's evaluated one.",
    )
    webhook_urls: list[str] = Field(
        default_factory=list,
        description="Receivers of severe alerts (severe_crs, crs_death, high_risk); "
        "JSON list in the environment: CRSMON_WEBHOOK_URLS='[\"https://...\"]'.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key that signs every webhook body."
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)
    webhook_max_attempts: int = Field(default=10, ge=1, le=50)
    webhook_backoff_s: float = Field(
        default=10.0, gt=0, description="First retry delay; doubles each attempt."
    )
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)

    @field_validator("risk_model_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _production_has_its_secrets(self) -> Settings:
        if self.mode == "production" and self.key_pepper is None:
            raise ValueError(
                "production mode needs CRSMON_KEY_PEPPER (a long random secret)"
            )
        if self.key_pepper is not None and len(self.key_pepper) < 32:
            raise ValueError("key_pepper: use at least 32 random characters")
        return self

    @model_validator(mode="after")
    def _rate_limit_parses(self) -> Settings:
        from limits import parse

        try:
            parse(self.rate_limit)
        except ValueError as exc:
            raise ValueError("rate_limit: e.g. 1200/minute") from exc
        return self

    def pepper(self) -> str:
        """The key pepper in force (the embedded one when none is set)."""
        from crsmon.auth.keys import EMBEDDED_PEPPER

        if self.key_pepper is None:
            return EMBEDDED_PEPPER
        return self.key_pepper.get_secret_value()

    @model_validator(mode="after")
    def _time_limit_below_visibility(self) -> Settings:
        # A task still running when its message becomes visible again would run
        # twice (reliability.md §1.2, F6).
        if self.task_time_limit_s >= self.visibility_timeout_s:
            raise ValueError("task_time_limit_s must be below visibility_timeout_s")
        return self

    @model_validator(mode="after")
    def _webhooks_are_signed_https(self) -> Settings:
        for url in self.webhook_urls:
            parsed = TypeAdapter(AnyHttpUrl).validate_python(url)
            if len(url) > MAX_WEBHOOK_URL_CHARS:
                raise ValueError(
                    f"webhook_urls: a URL is longer than {MAX_WEBHOOK_URL_CHARS} chars"
                )
            if parsed.scheme != "https" and parsed.host not in LOOPBACK_HOSTS:
                raise ValueError("webhook_urls: use https (http only to loopback)")
        if self.webhook_urls and not self.webhook_secret:
            raise ValueError("webhook_urls need a webhook_secret to sign the bodies")
        return self


def load_settings() -> Settings:
    """Settings from the environment (call at the edge, once)."""
    return Settings()
