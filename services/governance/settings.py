"""Governance settings (env prefix GOVERNANCE_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_VAR, CommonSettings


class GovernanceSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="GOVERNANCE_", extra="ignore", populate_by_name=True
    )

    port: int = 8003
    # Governance's own read models (projections); never another service's database.
    database_url: str = Field(f"sqlite+aiosqlite:///{DEFAULT_VAR / 'governance.db'}")
    consumer_group: str = "continuo-governance"
