"""`continuo keys`: create, list and revoke governance API keys (in governance's own database).

continuo keys create --name alice --role approver   prints the key once; only its hash is kept
continuo keys list                                  ids, names, roles, state (never secrets)
continuo keys revoke ID                             the key stops working at once
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from sqlalchemy import URL, make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from services.governance.auth import KeyFormatError, Role, create_key, list_keys, revoke_key
from services.governance.schema import governance_engine
from services.governance.settings import GovernanceSettings
from shared.store.migrate import upgrade_async

MIGRATIONS = Path(__file__).parent / "migrations"


async def _run(args: argparse.Namespace, database_url: str) -> int:
    await upgrade_async(database_url, MIGRATIONS, "gov_alembic_version")
    engine = governance_engine(database_url)
    try:
        if args.action == "create":
            info, key = await create_key(engine, args.name, Role(args.role))
            print(f"created key {info.key_id} for {info.name} ({info.role.value})")
            print(f"  {key}")
            print("Store it now: it is not shown again (only its hash is kept).")
            return 0
        if args.action == "list":
            keys = await list_keys(engine)
            if not keys:
                print("no keys")
            for k in keys:
                state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
                print(f"{k.key_id}  {k.name:<20} {k.role.value:<9} {k.source:<9} {state}")
            return 0
        if await revoke_key(engine, args.key_id):
            print(f"revoked key {args.key_id}")
            return 0
        print(f"no active key {args.key_id}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()


def main(argv: list[str], settings: GovernanceSettings | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="continuo keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    actions.add_parser("list", help="list keys (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    args = parser.parse_args(argv)
    settings = settings or GovernanceSettings()
    url = make_url(settings.database_url)
    folder = Path(url.database or "").parent
    if url.get_backend_name() == "sqlite" and url.database and not folder.is_dir():
        # Said before connecting: aiosqlite's thread, failing to open the file, can print its
        # own traceback as the loop closes.
        return _cannot_open(url, f"no directory {folder}")
    try:
        return asyncio.run(_run(args, settings.database_url))
    except KeyFormatError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, InterfaceError, OSError) as exc:  # no database or server
        return _cannot_open(url, str(getattr(exc, "orig", None) or exc))


def _cannot_open(url: URL, reason: str) -> int:
    where = url.render_as_string(hide_password=True)
    print(f"keys: cannot open the governance database {where}: {reason}", file=sys.stderr)
    print("  (set GOVERNANCE_DATABASE_URL to the database governance runs on)", file=sys.stderr)
    return 2
