"""Governance settings (env prefix GOVERNANCE_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_VAR, MIB, REPO_ROOT, CommonSettings


class GovernanceSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="GOVERNANCE_", extra="ignore", populate_by_name=True
    )

    port: int = 8003
    # A request body larger than this is refused (413) before or while it is read.
    max_body_bytes: int = Field(1 * MIB, gt=0)
    # Governance's own read models (projections); never another service's database.
    database_url: str = Field(f"sqlite+aiosqlite:///{DEFAULT_VAR / 'governance.db'}")
    consumer_group: str = "continuo-governance"
    # The longest a Kafka fetch waits for data (the embedded broker answers only when it runs
    # out; Apache Kafka as soon as data arrives). Every new model waits on it once.
    fetch_max_wait_ms: int = Field(30, ge=1, le=5000)
    # API keys installed (hashed) at start-up: `name:role:key` entries, comma or newline
    # separated, e.g. for `continuo up` and the demo. A secret: never logged or echoed.
    bootstrap_keys: SecretStr = SecretStr("")
    # Seconds between live audits of the champions' served predictions (0: never).
    live_audit_interval: float = 60.0
    # The COMPAS two-year file, for GET /v1/compas/audit.
    compas_path: Path = REPO_ROOT / "data" / "compas-scores-two-years.csv.gz"

    @model_validator(mode="after")
    def _production_database(self) -> GovernanceSettings:
        if self.environment == "production" and self.database_url.startswith("sqlite"):
            raise ValueError("GOVERNANCE_DATABASE_URL must name PostgreSQL in production")
        return self
