"""Governance API keys in governance's own database (SQLite file, migrated as the service does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.governance.auth import (
    Role,
    Unauthenticated,
    authenticate,
    create_key,
    install_bootstrap_keys,
    list_keys,
    new_key,
)
from services.governance.keys import MIGRATIONS
from services.governance.schema import governance_engine
from shared.store.migrate import upgrade_async


async def test_a_bootstrap_key_replaces_the_earlier_one_of_its_name_and_leaves_the_rest(
    tmp_path: Path,
):
    """`continuo up` starts governance with a new `stack` admin key each time: the one before
    it is revoked (its row kept), a CLI key of the same name and other bootstrap names stay."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'governance.db'}"
    await upgrade_async(url, MIGRATIONS, "gov_alembic_version")
    engine = governance_engine(url)
    try:
        first, second, other = (new_key()[1] for _ in range(3))
        _, cli_key = await create_key(engine, "stack", Role.VIEWER)
        await install_bootstrap_keys(
            engine, [("stack", Role.ADMIN, first), ("ci", Role.VIEWER, other)]
        )
        assert (await authenticate(engine, first)).role == Role.ADMIN
        await install_bootstrap_keys(engine, [("stack", Role.ADMIN, second)])
        assert (await authenticate(engine, second)).role == Role.ADMIN
        with pytest.raises(Unauthenticated):
            await authenticate(engine, first)
        assert (await authenticate(engine, other)).role == Role.VIEWER
        assert (await authenticate(engine, cli_key)).role == Role.VIEWER
        # Installing the same key again (a restart with the same configuration) keeps it.
        await install_bootstrap_keys(engine, [("stack", Role.ADMIN, second)])
        assert (await authenticate(engine, second)).role == Role.ADMIN
        keys = await list_keys(engine)
        assert len(keys) == 4
        assert sum(k.revoked_at is None for k in keys) == 3
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "url, reason",
    [
        ("sqlite+aiosqlite:///{tmp}/no/such/dir/governance.db", ": no directory "),
        ("postgresql+asyncpg://continuo:secret@127.0.0.1:9/x", "Connect call failed"),
    ],
)
def test_keys_on_a_database_it_cannot_open_says_which_and_why(tmp_path: Path, url, reason):
    """`continuo keys` pointed at a database it cannot reach: one line naming it (no password)
    and the reason, exit 2; not a traceback."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "continuo"), "keys", "list"],
        env={**os.environ, "GOVERNANCE_DATABASE_URL": url.format(tmp=tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot open the governance database" in done.stderr and reason in done.stderr
    assert "Traceback" not in done.stderr and "secret" not in done.stderr
