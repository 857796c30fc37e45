"""Governance HTTP API: wiring only. Routes live in `routes/`, rules in the modules they call.

Every /v1 endpoint needs an API key (`Authorization: Bearer cnt_...` or `X-API-Key`); /healthz,
/readyz and the dashboard's page and assets (/dashboard: no data in them) do not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.governance.auth import install_bootstrap_keys, parse_bootstrap
from services.governance.errors import Conflict, Forbidden, Invalid, NotFound
from services.governance.instruments import consumer_metrics
from services.governance.queries import Missing
from services.governance.routes import admin, dashboard, decisions, reads, trail
from services.governance.schema import governance_engine
from services.governance.service import Governance
from services.governance.settings import GovernanceSettings
from shared.bus import EnvelopeConsumer
from shared.events.types import TOPIC_DEPLOYMENTS, TOPIC_GOVERNANCE, TOPIC_MODELS, TOPIC_TASKS
from shared.fanout import Fanout
from shared.http import error_responses, health_router, install_error_handlers
from shared.metrics import metrics_router, relay_metrics
from shared.runtime import Runtime
from shared.store.migrate import upgrade_async

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


async def _consume(consumer: EnvelopeConsumer, governance: Governance) -> None:
    # Joining the group can take a while (after a crash, until the old member's session expires):
    # the API answers meanwhile, from the store and the projections.
    await consumer.start()
    async for batch in consumer.batches():
        try:
            await governance.handle(batch)
        except Exception:  # the batch is not committed: it is retried after a restart
            log.exception("governance.batch_failed", events=len(batch))
            raise


def _install_domain_errors(app: FastAPI) -> None:
    @app.exception_handler(Missing)
    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": "refused", "reasons": exc.reasons}, status_code=409)

    @app.exception_handler(Invalid)
    async def invalid(_: Request, exc: Invalid) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def create_app(settings: GovernanceSettings | None = None) -> FastAPI:
    settings = settings or GovernanceSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Each resource's clean-up is registered as it is opened, so a failed start-up closes
        # what was already open (in reverse order) instead of leaking it.
        async with contextlib.AsyncExitStack() as opened:
            bootstrap = parse_bootstrap(settings.bootstrap_keys.get_secret_value())
            await upgrade_async(settings.database_url, MIGRATIONS, "gov_alembic_version")
            engine = governance_engine(settings.database_url)
            opened.push_async_callback(engine.dispose)
            if bootstrap:
                installed = await install_bootstrap_keys(engine, bootstrap)
                log.info("governance.bootstrap_keys", count=installed)  # names and roles only
            runtime = Runtime.build("governance", settings)
            await runtime.start()
            opened.push_async_callback(runtime.stop)
            fanout = Fanout(settings.redis_url) if settings.redis_url else None
            if fanout is not None:
                opened.push_async_callback(fanout.close)
            governance = Governance(runtime, engine, settings, fanout)
            opened.push_async_callback(governance.close)
            consumer = EnvelopeConsumer(
                settings.kafka_bootstrap_servers,
                [TOPIC_TASKS, TOPIC_MODELS, TOPIC_DEPLOYMENTS, TOPIC_GOVERNANCE],
                group_id=settings.consumer_group,
                dead_letters=runtime.publisher,
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
            )
            opened.push_async_callback(consumer.stop)
            app.state.runtime, app.state.engine, app.state.governance = runtime, engine, governance
            app.state.consumer = consumer
            app.state.consuming = asyncio.create_task(_consume(consumer, governance))
            opened.push_async_callback(_cancel, app.state.consuming)
            resumed = await governance.resume()
            if resumed:
                log.info("governance.resumed", models=resumed)
            if settings.live_audit_interval > 0:
                audits = asyncio.create_task(
                    governance.run_live_audits(settings.live_audit_interval)
                )
                opened.push_async_callback(_cancel, audits)
            yield

    app = FastAPI(
        title="Continuo governance",
        version="0.2.0",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    install_error_handlers(app)
    _install_domain_errors(app)

    async def consumer_alive() -> str | None:
        task = getattr(app.state, "consuming", None)
        return None if task is not None and not task.done() else "event consumer stopped"

    app.include_router(health_router(lambda: getattr(app.state, "runtime", None), consumer_alive))
    # No key, as /healthz: counts, durations and model versions, no data (shared/metrics.py).
    app.include_router(
        metrics_router(
            relay_metrics(lambda: getattr(app.state, "runtime", None)),
            consumer_metrics(lambda: getattr(app.state, "consumer", None)),
        )
    )
    for module in (reads, decisions, trail, admin, dashboard):
        app.include_router(
            module.router, responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)
        )
    app.include_router(dashboard.page)  # the page and its assets: no data, no key
    return app
