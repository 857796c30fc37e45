"""Alembic environment of governance's own tables."""

from shared.store.migrate import run_env

run_env()
