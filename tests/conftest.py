"""Fixtures shared by every tier: real PostgreSQL databases, SQLite files, the embedded broker."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.store.migrate import upgrade
from shared.store.sql import SqlEventStore, open_event_store
from tests.support import create_pg_database, drop_pg_database

PG_ADMIN_URL = os.environ.get("CONTINUO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test, dropped afterwards."""
    name = f"continuo_t_{uuid.uuid4().hex[:12]}"
    url = create_pg_database(PG_ADMIN_URL, name)
    upgrade(url)
    yield url
    drop_pg_database(PG_ADMIN_URL, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The event store URL of each adapter in turn: one contract, every adapter."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlEventStore]:
    event_store = open_event_store(store_url)
    yield event_store
    await event_store.close()


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """The embedded Kafka-compatible broker (Tansu), one per test session; yields its bootstrap."""
    import asyncio

    from shared.broker import start_broker_ready

    broker = asyncio.run(start_broker_ready())
    yield broker.bootstrap
    broker.stop()
