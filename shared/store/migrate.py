"""Run Alembic migrations programmatically (the store's, or a service's own tables)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

STORE_MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str, script_location: Path = STORE_MIGRATIONS, version_table: str = "alembic_version") -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.set_main_option("version_table", version_table)
    return config


def upgrade(url: str, script_location: Path = STORE_MIGRATIONS, version_table: str = "alembic_version") -> None:
    """Bring a database to the newest schema (idempotent)."""
    command.upgrade(alembic_config(url, script_location, version_table), "head")


async def upgrade_async(url: str, script_location: Path = STORE_MIGRATIONS, version_table: str = "alembic_version") -> None:
    """`upgrade` from async code (Alembic's async env runs its own event loop in a thread)."""
    await asyncio.to_thread(upgrade, url, script_location, version_table)
