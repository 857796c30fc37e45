"""API keys with roles: the pure rules, and the small table that keeps them (hashed).

A key reads `cnt_<id>_<secret>`: the id (12 hex digits) finds the row, the secret (32 random
bytes, URL-safe base64) is checked against its sha256 in constant time. Only the hash is stored;
the key is shown once, when it is created. A 256-bit random secret needs no slow hash: nobody can
guess it, and its hash reveals nothing useful.

Roles: viewer reads; operator promotes and rolls back; approver approves and rejects; admin does
everything. Operator and approver each include viewer; admin includes all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.governance.schema import api_keys
from shared.events.envelope import utcnow

PREFIX = "cnt"
_KEY = re.compile(r"^cnt_([0-9a-f]{12})_([A-Za-z0-9_-]{20,200})$")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


# What each role may act as.
GRANTS: dict[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.OPERATOR: frozenset({Role.OPERATOR, Role.VIEWER}),
    Role.APPROVER: frozenset({Role.APPROVER, Role.VIEWER}),
    Role.ADMIN: frozenset(Role),
}


def allows(held: Role, needed: Role) -> bool:
    return needed in GRANTS[held]


class KeyFormatError(ValueError):
    """A key or key spec is malformed; the message says how (never repeating the secret)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its owner's name and role."""

    key_id: str
    name: str
    role: Role


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    source: str


def new_key() -> tuple[str, str, str]:
    """A fresh key: (key_id, full key to hand out once, sha256 of its secret)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}_{key_id}_{secret}", hash_secret(secret)


def parse_key(key: str) -> tuple[str, str]:
    """(key_id, secret) of a well-formed key; raises KeyFormatError otherwise."""
    match = _KEY.match(key.strip())
    if match is None:
        raise KeyFormatError("not a Continuo API key (expected cnt_<12 hex>_<secret>)")
    return match.group(1), match.group(2)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise KeyFormatError(
            f"unknown role {value!r}: one of {', '.join(r.value for r in Role)}"
        ) from None


def parse_bootstrap(text: str) -> list[tuple[str, Role, str]]:
    """`name:role:key` entries separated by commas or new lines (blank lines and # ignored)."""
    entries = []
    for raw in re.split(r"[,\n]", text):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise KeyFormatError("bootstrap keys: each entry must read name:role:key")
        name, role, key = (p.strip() for p in parts)
        if not name:
            raise KeyFormatError("bootstrap keys: an entry has no name")
        parse_key(key)
        entries.append((name, parse_role(role), key))
    return entries


# ---------------------------------------------------------------------------------------------
# The table


async def create_key(engine: AsyncEngine, name: str, role: Role) -> tuple[KeyInfo, str]:
    """Store a new key for `name`; return its info and the key (shown once, never stored)."""
    if not name.strip():
        raise KeyFormatError("a key needs a name")
    key_id, key, digest = new_key()
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            api_keys.insert().values(
                key_id=key_id,
                name=name.strip(),
                role=role.value,
                secret_sha256=digest,
                created_at=now,
                revoked_at=None,
                source="cli",
            )
        )
    return KeyInfo(key_id, name.strip(), role, now, None, "cli"), key


async def install_bootstrap_keys(engine: AsyncEngine, entries: list[tuple[str, Role, str]]) -> int:
    """Store (or refresh) keys given in configuration, hashed; return how many. The
    configuration is the truth for its names: an earlier bootstrap key of the same name and
    another id (`continuo up` makes a new one each start) is revoked, its row kept."""
    now = utcnow()
    async with engine.begin() as conn:
        for name, role, key in entries:
            key_id, secret = parse_key(key)
            await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.name == name,
                    api_keys.c.source == "bootstrap",
                    api_keys.c.key_id != key_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            await conn.execute(api_keys.delete().where(api_keys.c.key_id == key_id))
            await conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    name=name,
                    role=role.value,
                    secret_sha256=hash_secret(secret),
                    created_at=utcnow(),
                    revoked_at=None,
                    source="bootstrap",
                )
            )
    return len(entries)


async def list_keys(engine: AsyncEngine) -> list[KeyInfo]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
    return [
        KeyInfo(r.key_id, r.name, Role(r.role), r.created_at, r.revoked_at, r.source) for r in rows
    ]


async def revoke_key(engine: AsyncEngine, key_id: str) -> bool:
    """Revoke a key by id; False if there is no such (unrevoked) key."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    return bool(result.rowcount)


class Unauthenticated(Exception):
    """No usable key: missing, malformed, unknown or revoked (the message says which)."""


async def authenticate(engine: AsyncEngine, key: str | None) -> Principal:
    """The principal a presented key stands for, or Unauthenticated."""
    if not key:
        raise Unauthenticated("an API key is required (Authorization: Bearer <key>)")
    try:
        key_id, secret = parse_key(key)
    except KeyFormatError as exc:
        raise Unauthenticated(str(exc)) from None
    async with engine.connect() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))).first()
    # Compare even when the id is unknown, so timing does not tell ids apart.
    stored = row.secret_sha256 if row is not None else "0" * 64
    if not secret_matches(secret, stored) or row is None:
        raise Unauthenticated("unknown API key")
    if row.revoked_at is not None:
        raise Unauthenticated(f"API key {key_id} was revoked")
    return Principal(key_id=row.key_id, name=row.name, role=Role(row.role))
