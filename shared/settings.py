"""Settings common to every service, read from the environment and validated at start-up.

Each service subclasses `CommonSettings` with its own env prefix (INGEST_, TRAINER_, ...); the
infrastructure addresses below keep their conventional unprefixed names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAR = REPO_ROOT / "var"
MIB = 1024 * 1024


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class CommonSettings(BaseSettings):
    """Where the infrastructure is, and how to log. Defaults are the embedded development setup."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    environment: Literal["development", "test", "production"] = Field(
        "development", validation_alias=_env("CONTINUO_ENV")
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS")
    )
    # Idempotent producers need broker support (Apache Kafka has it; the embedded broker does not).
    kafka_idempotence: bool = Field(False, validation_alias=_env("KAFKA_ENABLE_IDEMPOTENCE"))
    store_url: str = Field(
        f"sqlite+aiosqlite:///{DEFAULT_VAR / 'events.db'}",
        validation_alias=_env("CONTINUO_STORE_URL"),
    )
    artifacts_dir: Path = Field(
        DEFAULT_VAR / "artifacts", validation_alias=_env("CONTINUO_ARTIFACTS_DIR")
    )
    tasks_dir: Path = Field(REPO_ROOT / "tasks", validation_alias=_env("CONTINUO_TASKS_DIR"))
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("REDIS_URL"))
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", validation_alias=_env("CONTINUO_LOG_FORMAT")
    )
    log_level: str = Field("info", validation_alias=_env("CONTINUO_LOG_LEVEL"))
    # How often an idle relay looks for events another process appended under its producer (a
    # second replica), in seconds; an append through the service's own store wakes it at once.
    relay_interval: float = Field(0.5, validation_alias=_env("CONTINUO_RELAY_INTERVAL"))
    # Container allocations between the collector's young-generation passes (CPython: 700).
    # See shared.runtime.tune_collector.
    gc_threshold: int = Field(20_000, ge=1, validation_alias=_env("CONTINUO_GC_THRESHOLD"))
    host: str = "127.0.0.1"
    port: int = 8000

    @model_validator(mode="after")
    def _production_is_explicit(self) -> CommonSettings:
        if self.environment == "production" and self.store_url.startswith("sqlite"):
            raise ValueError("CONTINUO_STORE_URL must name PostgreSQL in production")
        return self
