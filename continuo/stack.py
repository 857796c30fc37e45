"""Run the four services as separate processes on one machine (for `up`, `demo` and e2e tests).

The stack optionally starts the embedded broker, migrates the event store, starts ingest, trainer,
governance and serving with one shared environment, waits until each answers /readyz, and stops
them all cleanly (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from shared.broker import (
    EmbeddedBroker,
    die_with_parent,
    free_port,
    start_broker,
    start_broker_ready,
    wait_for_metadata,
)
from shared.store.migrate import upgrade_async
from shared.tasks import TaskSpec

SERVICES = ("ingest", "trainer", "governance", "serving")


def write_task_specs(directory: Path, specs: Iterable[TaskSpec]) -> dict[str, str]:
    """Write task specs as YAML into `directory` (made if missing), for a stack to register at
    start-up; returns the environment override that points the services at them."""
    directory.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
        (directory / f"{spec.name}.yaml").write_text(text)
    return {"CONTINUO_TASKS_DIR": str(directory)}


class StackError(RuntimeError):
    """A service did not start or become ready; the message names it and its log."""


@dataclass
class Stack:
    """A running set of services; `url(name)` is where each one listens."""

    workdir: Path
    store_url: str
    bootstrap: str | None = None
    log_to_files: bool = True
    env_overrides: dict[str, str] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    broker_port: int | None = None  # None: any free port
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # An admin key for governance, made per stack and installed (hashed) at its start-up.
    governance_key: str = field(
        default_factory=lambda: f"cnt_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    )

    def governance_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.governance_key}"}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def log_path(self, service: str) -> Path:
        return self.workdir / "logs" / f"{service}.log"

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "CONTINUO_STORE_URL": self.store_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap or "",
            "CONTINUO_ARTIFACTS_DIR": str(self.workdir / "artifacts"),
            "GOVERNANCE_DATABASE_URL": f"sqlite+aiosqlite:///{self.workdir / 'governance.db'}",
            "TRAINER_DATADIR": str(self.workdir / "trainer"),
            "GOVERNANCE_BOOTSTRAP_KEYS": f"stack:admin:{self.governance_key}",
            "PYTHONUNBUFFERED": "1",
            **self.env_overrides,
        }
        for service in SERVICES:
            if service in self.ports:
                env[f"{service.upper()}_PORT"] = str(self.ports[service])
        return env

    async def start(
        self, *, ready_timeout: float = 90.0, services: Sequence[str] = SERVICES
    ) -> None:
        """Start the broker (unless `bootstrap` names one) and `services` (default: all four;
        a benchmark of one service starts it alone)."""
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        if self.bootstrap is None:
            # Held before it answers: stopped if it never does, or if start-up is cancelled now
            # (SIGINT during `continuo up`'s start), rather than left to the kernel.
            self.broker = start_broker(self.broker_port, self.workdir / "logs" / "broker.log")
            try:
                await wait_for_metadata(self.broker.bootstrap, 30.0)
            except BaseException:
                self.broker.stop()
                raise
            self.bootstrap = self.broker.bootstrap
        await upgrade_async(self.store_url)
        self.ports = {name: self.ports.get(name) or free_port() for name in SERVICES}
        for name in services:
            self._spawn(name, name, self._replica_environment(name))
        try:
            await asyncio.gather(*(self._ready(n, ready_timeout) for n in services))
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, service: str, env: dict[str, str]) -> None:
        output = open(self.log_path(name), "ab") if self.log_to_files else None  # noqa: SIM115
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    async def add_replica(self, service: str, *, ready_timeout: float = 90.0) -> str:
        """One more process of a running `service` (serving, say) on its own port, sharing the
        store, broker and artifacts; returns its name (`serving-2`, ...) for `url(name)`."""
        n = 1 + sum(1 for k in self.processes if k == service or k.startswith(f"{service}-"))
        name = f"{service}-{n}"
        self.ports[name] = free_port()
        self._spawn(name, service, self._replica_environment(name))
        await self._ready(name, ready_timeout)
        return name

    def _replica_environment(self, name: str) -> dict[str, str]:
        service = name.split("-", 1)[0]
        env = {**self.environment(), f"{service.upper()}_PORT": str(self.ports[name])}
        # A trainer worker's static group id: a restarted one takes its partitions back at once.
        env.setdefault("TRAINER_GROUP_INSTANCE_ID", name)
        if name != service and service == "trainer":  # each Faust worker its own data directory
            env["TRAINER_DATADIR"] = str(self.workdir / name)
        return env

    async def restart_broker(self) -> None:
        """Stop the embedded broker and start an empty one on the same address: what a broker
        that keeps nothing on disk does when it dies (every topic comes back empty)."""
        if self.broker is None:
            raise StackError("this stack runs no embedded broker")
        port = int(self.broker.bootstrap.rsplit(":", 1)[1])
        self.broker.stop()
        restarts = len(list((self.workdir / "logs").glob("broker*.log")))
        log_path = self.workdir / "logs" / f"broker-{restarts + 1}.log"
        self.broker = await start_broker_ready(port, log_path=log_path)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to a service process (and its children) and, for SIGKILL or SIGTERM,
        wait until it is gone."""
        process = self.processes[name]
        os.killpg(process.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            process.wait()

    async def restart(self, name: str, *, ready_timeout: float = 90.0) -> None:
        """Start a stopped (or killed) service process again, on its port, and wait until it is
        ready."""
        if self.processes[name].poll() is None:
            raise StackError(f"{name} is still running")
        self._spawn(name, name.split("-", 1)[0], self._replica_environment(name))
        await self._ready(name, ready_timeout)

    async def _ready(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.processes[name].poll() is not None:
                    raise StackError(f"{name} exited during start-up; see {self.log_path(name)}")
                try:
                    response = await client.get(f"{self.url(name)}/readyz")
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise StackError(f"{name} was not ready within {timeout}s; see {self.log_path(name)}")

    def stop(self, grace: float = 15.0) -> None:
        """Stop services in reverse order of data flow (extra replicas first), then the broker."""
        for name in reversed(self.processes):
            process = self.processes[name]
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.broker:
            self.broker.stop()
