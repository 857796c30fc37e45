"""Settings of the ingest service (env prefix INGEST_, infrastructure names unprefixed)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import MIB, CommonSettings


class IngestSettings(CommonSettings):
    """Where ingest listens and how much one request may carry."""

    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore", populate_by_name=True)

    port: int = 8001
    # A request body larger than this is refused (413) before or while it is read.
    max_body_bytes: int = Field(16 * MIB, gt=0)
    # A request with more records than this is refused (413): split it into batches.
    max_records: int = Field(50_000, gt=0)
