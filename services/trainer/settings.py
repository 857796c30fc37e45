"""Trainer settings (env prefix TRAINER_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class TrainerSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINER_", extra="ignore", populate_by_name=True)

    port: int = 8004
    app_id: str = "continuo-trainer"
    # Data events handed to the learner at once (Faust `take`), and the longest wait to fill them.
    batch_size: int = 2000
    batch_within: float = 0.1
    # Observations awaiting their label; the oldest are forgotten past this many.
    pending_limit: int = 200_000
