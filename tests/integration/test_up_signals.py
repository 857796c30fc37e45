"""`make up` stops on SIGINT and SIGTERM, in the foreground and in the background, leaving nothing.

`make up` runs as a shell would run it: in a process group of its own, with SIGINT at its default
(a foreground job) or ignored (a background job `make up &` in a shell without job control: the
shell ignores SIGINT in it, and make and continuo inherit that). Ctrl-C sends SIGINT to the whole
foreground process group; `kill` sends SIGTERM to make, which forwards it to its recipe. Every
process `make up` started (make, continuo, the embedded broker, the four services) must be gone
within the bound. Ports, store and workdir are the test's own, so a `make up` running beside it
is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from continuo.stack import SERVICES
from shared.broker import free_port

REPO = Path(__file__).resolve().parents[2]
STAMP = ".venv/.installed-stamp"  # as the Makefile names it (make matches names, not files)
READY_WITHIN = 75.0
# continuo gives the services 15 s after SIGTERM before SIGKILL; they need about 2 s.
STOPPED_WITHIN = 25.0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _descendants(pid: int) -> set[int]:
    seen: set[int] = set()
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Running (a zombie has exited: it only waits for its parent to collect its status)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Up:
    """One `make up` in a process group of its own, on free ports, with its own store."""

    def __init__(self, tmp: Path, *, sigint_ignored: bool) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        broker_port = free_port()
        env = {
            **os.environ,
            "CONTINUO_STORE_URL": f"sqlite+aiosqlite:///{tmp / 'events.db'}",
            # `make up` uses the configured governance database and artifacts, as the store.
            "GOVERNANCE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'governance.db'}",
            "CONTINUO_ARTIFACTS_DIR": str(tmp / "artifacts"),
            "PYTHONUNBUFFERED": "1",
            **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
        }
        for name in ("KAFKA_BOOTSTRAP_SERVERS", "CONTINUO_ENV"):
            env.pop(name, None)  # the embedded defaults, as `make up` is meant to run
        # Every process `make up` starts inherits this environment: how leftovers are found.
        self.marker = env["CONTINUO_STORE_URL"].encode()
        self.log = tmp / "make-up.log"
        output = self.log.open("wb")

        def as_a_shell_starts_a_job() -> None:
            if sigint_ignored:
                signal.signal(signal.SIGINT, signal.SIG_IGN)

        self.make = subprocess.Popen(
            # -o: never reinstall the virtualenv here, even if pyproject.toml is newer.
            [
                "make",
                "--no-print-directory",
                "-o",
                STAMP,
                "up",
                f"UP_ARGS=--workdir {tmp / 'up'} --broker-port {broker_port}",
            ],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a shell gives a job
            preexec_fn=as_a_shell_starts_a_job,
        )
        output.close()
        self.pids: set[int] = set()
        self.signalled_at = 0.0

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_WITHIN
        pending = dict(self.ports)
        with httpx.Client(timeout=2.0) as client:
            while pending and time.monotonic() < deadline:
                assert self.make.poll() is None, f"make up exited early:\n{self.output()}"
                for name, port in list(pending.items()):
                    try:
                        if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                time.sleep(0.2)
        assert not pending, f"not ready within {READY_WITHIN}s: {pending}\n{self.output()}"

    def record_processes(self) -> set[int]:
        """make, continuo, the broker and the services, as they run now."""
        self.pids = {self.make.pid, *_descendants(self.make.pid)}
        return self.pids

    def send(self, sig: signal.Signals, target: str) -> None:
        """`sig` to the job's process group (as Ctrl-C does) or to make alone (as `kill $!`)."""
        self.signalled_at = time.monotonic()
        if target == "group":
            os.killpg(self.make.pid, sig)
        else:
            os.kill(self.make.pid, sig)

    def stop_within(self, bound: float, way: str) -> float:
        """Seconds from the signal until make exited; fails past `bound` or if anything is left."""
        try:
            self.make.wait(max(0.0, self.signalled_at + bound - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{way}: make up still running {bound}s after the signal:\n{self.output()}")
        took = time.monotonic() - self.signalled_at
        deadline = time.monotonic() + 2.0  # the kernel collecting what just exited
        while time.monotonic() < deadline and any(_alive(p) for p in self.pids):
            time.sleep(0.05)
        left = {p for p in self.pids if _alive(p)}
        left |= {p for p in self._ours() if _alive(p)}
        assert not left, f"{way}: left running: {sorted(left)}\n{self.output()}"
        return took

    def _ours(self) -> set[int]:
        """Every process, anywhere, started with this run's environment."""
        pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
        return {pid for pid in pids if pid != os.getpid() and _environ_has(pid, self.marker)}

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill_everything(self) -> None:
        for pid in self.pids | self._ours():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.make.wait(10)


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    started: list[Up] = []

    def start(*, sigint_ignored: bool) -> Up:
        workdir = tmp_path / f"up-{len(started)}"
        workdir.mkdir()
        up = Up(workdir, sigint_ignored=sigint_ignored)
        started.append(up)
        return up

    yield start
    for up in started:
        up.kill_everything()


# (SIGINT ignored in the job, the signal, sent to the job's process group or to make alone)
WAYS = {
    "foreground, Ctrl-C": (False, signal.SIGINT, "group"),
    "background, SIGINT to its process group": (True, signal.SIGINT, "group"),
    "background, SIGTERM to make (`kill $!`)": (True, signal.SIGTERM, "make"),
}


def test_make_up_stops_every_process_it_started_on_a_signal(
    start_up: Callable[..., Up],
) -> None:
    # All three at once: a stack takes 10-30 s to become ready on two shared cores, mostly
    # waiting (the trainer's first group join), so they overlap well.
    ups = {way: start_up(sigint_ignored=ignored) for way, (ignored, _, _) in WAYS.items()}
    for up in ups.values():
        up.wait_ready()
    for way, up in ups.items():
        pids = up.record_processes()
        assert len(pids) >= 2 + 1 + len(SERVICES), f"{way}: make, continuo, broker, services"
    for way, (_, sig, target) in WAYS.items():
        ups[way].send(sig, target)
    for way, up in ups.items():
        took = up.stop_within(STOPPED_WITHIN, way)
        assert "Stopping the services" in up.output(), way
        print(f"{way}: stopped in {took:.1f}s")


@pytest.mark.parametrize(
    "processes",
    [
        pytest.param(3, id="once-the-broker-runs"),
        pytest.param(3 + len(SERVICES), id="once-the-services-run"),
    ],
)
def test_a_background_make_up_stops_on_sigint_during_start_up(
    start_up: Callable[..., Up], processes: int
) -> None:
    up = start_up(sigint_ignored=True)
    deadline = time.monotonic() + READY_WITHIN
    # make, continuo, then the broker, then the services: start-up under way, nothing ready.
    while time.monotonic() < deadline and len(up.record_processes()) < processes:
        assert up.make.poll() is None, up.output()
        time.sleep(0.02)
    up.send(signal.SIGINT, "group")
    up.stop_within(STOPPED_WITHIN, "background, SIGINT during start-up")
