"""Trainer settings (env prefix TRAINER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_VAR, CommonSettings


class TrainerSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINER_", extra="ignore", populate_by_name=True)

    port: int = 8004
    app_id: str = "continuo-trainer"
    # Faust keeps its local state here (tables are in memory; the store is the system of record).
    datadir: Path = DEFAULT_VAR / "trainer"
    # Data events handed to the learner at once (Faust `take`), and the longest wait to fill them.
    batch_size: int = 2000
    batch_within: float = 0.05
    # How long a rebalance may take before members are dropped. Faust's 60 s default also delays
    # the first group join (the embedded broker holds it about half this long); our rebalances
    # recover no tables, so a short timeout is safe on Apache Kafka too.
    rebalance_timeout: float = 10.0
    # A worker that dies is noticed after this long; its partitions move about 2 s later (7.4-8.5 s
    # after a SIGKILL in tests/e2e/test_trainer_workers.py; 16-18 s with 10 s). 6 s is the least
    # Apache Kafka accepts by default (group.min.session.timeout.ms). Heartbeats go every third
    # of it from the event loop, which LightGBM and snapshots never block (they run in threads),
    # so a short timeout causes no false alarms.
    session_timeout: float = 6.0
    # Static group membership (services/trainer/faust_transport.py): a unique id per worker makes
    # a restarted worker rejoin at once. Empty: dynamic membership.
    group_instance_id: str = ""
    # The longest a fetch waits for data. Apache Kafka answers as soon as data arrives; the
    # embedded broker only when the wait runs out, so keep it short there (see faust_transport).
    fetch_max_wait_ms: int = 30
    # Observations awaiting their label; the oldest are forgotten past this many.
    pending_limit: int = 200_000
    # A task's state is snapshotted every this many data events (0: never), so that a restart
    # replays only the events after the newest snapshot (services/trainer/snapshots.py).
    snapshot_every: int = 20_000
