"""Alembic environment of the event store (the logic is shared with services' own migrations)."""

from shared.store.migrate import run_env

run_env()
