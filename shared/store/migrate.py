"""Run Alembic migrations programmatically (the store's, or a service's own tables)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

STORE_MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(
    url: str, script_location: Path = STORE_MIGRATIONS, version_table: str = "alembic_version"
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.set_main_option("version_table", version_table)
    return config


def upgrade(
    url: str, script_location: Path = STORE_MIGRATIONS, version_table: str = "alembic_version"
) -> None:
    """Bring a database to the newest schema (idempotent)."""
    command.upgrade(alembic_config(url, script_location, version_table), "head")


async def upgrade_async(
    url: str, script_location: Path = STORE_MIGRATIONS, version_table: str = "alembic_version"
) -> None:
    """`upgrade` from async code (Alembic's async env runs its own event loop in a thread)."""
    await asyncio.to_thread(upgrade, url, script_location, version_table)


def run_env() -> None:
    """Body of every Continuo `env.py`: run the migrations online on an async engine."""
    config = context.config

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            version_table=config.get_main_option("version_table") or "alembic_version",
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "")
        async with engine.connect() as conn:
            await conn.run_sync(run)
            await conn.commit()
        await engine.dispose()

    if context.is_offline_mode():
        raise SystemExit("offline migrations are not supported: run against a database")
    asyncio.run(run_async())
