"""Fixtures shared by every tier: real PostgreSQL databases, SQLite files, the embedded broker."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
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


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings) -> bool | None:
    """pytest-timeout's signal method, which also prints where every asyncio task of the test's
    event loop waits: a hung async test is a loop idling on an await that never completes, and the
    threads' stacks that pytest-timeout prints do not show which. (Other methods, and tests off
    the main thread, are left to pytest-timeout itself.)"""
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame) -> None:
        __tracebackhide__ = True
        import pytest_timeout

        loop = asyncio._get_running_loop()
        if loop is not None:
            terminal = item.config.get_terminal_writer()
            terminal.sep("+", title="Timeout: where the event loop's tasks wait")
            for task in asyncio.all_tasks(loop):
                terminal.line(f"{task.get_name()}:")
                for where in _awaiting(task.get_coro()):
                    terminal.line(f"  {where}")
        pytest_timeout.timeout_sigalrm(item, settings)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


def _awaiting(coro) -> list[str]:
    """The chain of awaits a suspended coroutine is in, outermost first, as `file:line function`
    (a task's own stack shows only its outermost frame). It ends at an `async for` over an async
    generator: the object awaited there has no frame to follow."""
    chain = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        frame = frame or getattr(coro, "ag_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        nxt = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        coro = nxt or getattr(coro, "ag_await", None)
    return chain
