"""`continuo`: the operator's command line. It composes shared/ and the services, so it sits above
both (shared/ never imports a service).

    continuo migrate            bring the event store schema up to date
    continuo broker [--port N]  run the embedded Kafka-compatible broker in the foreground
    continuo up                 run the four services on the embedded defaults until Ctrl-C
    continuo demo               stream the electricity data through the running system
    continuo evaluate FILE.csv  try a stream with the learner, in process
    continuo replay [--watch]   republish the whole store to Kafka (e.g. after a broker restart)
    continuo replay --models TASK   rebuild TASK's models from the store; check the stored bytes
    continuo compare TASK [VERSION ...] [--from N]   each pipeline version alone on the stored rows
    continuo keys ...           governance API keys: create --name N --role R | list | revoke ID

Operating the running system through governance (CONTINUO_GOVERNANCE_URL, CONTINUO_API_KEY;
docs/cli.md):
    continuo status [TASK ...]                    champion, canary, served accuracy, lag
    continuo models TASK                          every model version and its status
    continuo promote TASK VERSION --reason R      promote through the policy gate
    continuo rollback TASK VERSION --reason R     back to an earlier promoted version
    continuo canary TASK [start|weight|stop] ...  the task's canary
    continuo flags TASK [set KEY VALUE|remove KEY] --reason R
    continuo audit TASK [VERSION]                 bias audits and their figures
    continuo trail TASK                           the decision trail
    continuo pipelines TASK [register FILE|start VERSION] --reason R   pipeline versions
Exit codes: 0 done, 1 refused by governance (policy or any 4xx), 2 usage, 3 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from continuo.operate import COMMANDS as OPERATOR_COMMANDS
from continuo.operate import handler
from shared.logging import configure_logging
from shared.settings import REPO_ROOT, CommonSettings

if TYPE_CHECKING:
    from shared.store.port import EventStore


def _migrate(_: list[str]) -> int:
    from shared.store.migrate import upgrade

    settings = CommonSettings()
    upgrade(settings.store_url)
    print("event store schema is up to date")
    return 0


def _broker(argv: list[str]) -> int:
    from shared.broker import start_broker_ready

    parser = argparse.ArgumentParser(prog="continuo broker")
    parser.add_argument("--port", type=int, default=9092)
    args = parser.parse_args(argv)
    broker = asyncio.run(start_broker_ready(args.port))
    print(f"embedded broker at {broker.bootstrap} (memory only); Ctrl-C stops it")
    try:
        broker.process.wait()
    except KeyboardInterrupt:
        broker.stop()
    return 0


def _up(argv: list[str]) -> int:
    from continuo.stack import Stack

    parser = argparse.ArgumentParser(prog="continuo up")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "var" / "up")
    parser.add_argument(
        "--broker-port",
        type=int,
        default=None,
        help="the embedded broker's port (default: KAFKA_BOOTSTRAP_SERVERS's, 9092)",
    )
    args = parser.parse_args(argv)
    # A background job starts with SIGINT ignored: until the event loop takes SIGINT over (in
    # `run`), let it interrupt as in the foreground; nothing has been started yet.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from services.governance.settings import GovernanceSettings
    from services.ingest.settings import IngestSettings
    from services.serving.settings import ServingSettings
    from services.trainer.settings import TrainerSettings

    settings = CommonSettings()
    # The documented ports (each service's settings, so INGEST_PORT etc. still apply).
    ports = {
        "ingest": IngestSettings().port,
        "trainer": TrainerSettings().port,
        "governance": GovernanceSettings().port,
        "serving": ServingSettings().port,
    }
    stack = Stack(
        args.workdir,
        store_url=settings.store_url,
        log_to_files=False,
        ports=ports,
        # The configured governance database and artifacts, as for the store: what `continuo
        # keys`, `replay` and `verify` read by default (not the stack's own directory).
        env_overrides={
            "GOVERNANCE_DATABASE_URL": GovernanceSettings().database_url,
            "CONTINUO_ARTIFACTS_DIR": str(settings.artifacts_dir),
        },
        broker_port=args.broker_port or int(settings.kafka_bootstrap_servers.rsplit(":", 1)[-1]),
        # A broker named in the environment is used as it is; otherwise the embedded one starts.
        bootstrap=(
            settings.kafka_bootstrap_servers
            if "kafka_bootstrap_servers" in settings.model_fields_set
            else None
        ),
    )

    async def run() -> None:
        # SIGINT and SIGTERM stop the stack from the first moment, start-up included, whatever
        # this process inherited: a shell without job control starts `make up &` with SIGINT
        # ignored, and Python then leaves it ignored (no KeyboardInterrupt, ever). Installed
        # here, they replace that; while the stack stops, a repeated signal changes nothing.
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        starting = asyncio.ensure_future(stack.start())
        stopping = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # a service that failed to start ends the run here
                print("Continuo is up:")
                for name in stack.ports:
                    print(f"  {name:<11} {stack.url(name)}")
                print(f"  broker      {stack.bootstrap}")
                print("Governance admin key for this run (send as 'Authorization: Bearer …'):")
                print(f"  {stack.governance_key}\nCtrl-C stops everything.", flush=True)
                await stopping
        finally:
            starting.cancel()
            stopping.cancel()
            await asyncio.gather(starting, stopping, return_exceptions=True)
            print("Stopping the services…", flush=True)
            # Each gets SIGTERM and up to 15 s (then SIGKILL); waited for before exiting.
            await asyncio.to_thread(stack.stop)

    try:
        asyncio.run(run())
    finally:
        stack.stop()  # anything left (a no-op after a clean stop)
    return 0


RELAYS = ("ingest", "trainer", "governance", "serving", "all")


def _replay(argv: list[str]) -> int:
    from shared.store.sql import open_event_store

    parser = argparse.ArgumentParser(
        prog="continuo replay",
        description="Reset every relay cursor to 0: each running service republishes its events.",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="then follow the republishing (a bar per relay, on a terminal) until every relay is "
        "back where it was; Ctrl-C stops watching, not the republishing",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="longest --watch waits (s)")
    parser.add_argument(
        "--models",
        metavar="TASK",
        help="instead: rebuild TASK's models in this process from its stored data events (a bar "
        "on a terminal) and check each has the bytes of the model the trainer stored; exit 1 if "
        "one differs",
    )
    args = parser.parse_args(argv)
    if args.models:
        return asyncio.run(_replay_models(args.models))

    async def reset() -> int:
        store = open_event_store(CommonSettings().store_url)
        try:
            # Where each relay was: republishing is done when its cursor is back there.
            was = {name: await store.load_cursor(f"relay:{name}") for name in RELAYS}
            for producer in RELAYS:
                await store.save_cursor(f"relay:{producer}", 0)
            print(
                "relay cursors reset: each service republishes its events from position 0 on its "
                "next poll"
            )
            return await _follow_relays(store, was, args.timeout) if args.watch else 0
        finally:
            await store.close()

    try:
        return asyncio.run(reset())
    except KeyboardInterrupt:
        print("stopped watching; the relays go on republishing")
        return 0


async def _replay_models(task: str) -> int:
    """Rebuild a task's models from the store (as the trainer would, without faults) and compare
    each with the model the trainer stored under the same version, by content hash."""
    import time

    from continuo.progress import progress
    from services.trainer.service import replay_models
    from shared.artifacts import sha256
    from shared.events.types import ModelTrained, data_stream, model_stream
    from shared.registry import registered_tasks
    from shared.runtime import tune_collector
    from shared.store.sql import open_event_store

    settings = CommonSettings()
    tune_collector(settings)  # as the trainer replays: the same collector setting
    store = open_event_store(settings.store_url)
    try:
        if task not in await registered_tasks(store):
            print(f"no task {task!r} in the store", file=sys.stderr)
            return 2
        last = await store.read_all(limit=1, streams=[data_stream(task)], descending=True)
        total = (last[0].stream_version or 0) if last else 0
        started = time.perf_counter()
        with progress(f"replaying {task}", total, unit="events") as bar:
            core, made = await replay_models(store, task, progress=bar.advance)
        seconds = time.perf_counter() - started
        stored = {
            m.model_version: m.artifact_sha256
            for m in (e.data() for e in await store.read_stream(model_stream(task)))
            if isinstance(m, ModelTrained)
        }
    finally:
        await store.close()
    rebuilt = {c.model_version: sha256(c.model_bytes) for c in made}
    differ = sorted(v for v in rebuilt.keys() & stored.keys() if rebuilt[v] != stored[v])
    print(
        f"{task}: {core.version:,} data events replayed in {seconds:.1f} s "
        f"({core.version / max(seconds, 1e-9):,.0f} events/s); {len(rebuilt)} models rebuilt, "
        f"{len(rebuilt.keys() & stored.keys()) - len(differ)} with the stored bytes"
    )
    if rebuilt.keys() - stored.keys():
        print(
            f"  not stored (yet) by the trainer: versions {sorted(rebuilt.keys() - stored.keys())}"
        )
    if stored.keys() - rebuilt.keys():
        print(f"  stored but not rebuilt: versions {sorted(stored.keys() - rebuilt.keys())}")
    if differ:
        print(f"  different bytes: versions {differ}")
    return 1 if differ or stored.keys() - rebuilt.keys() else 0


async def _follow_relays(store: EventStore, was: dict[str, int], timeout: float) -> int:
    """Bars of each relay's cursor (a store position) climbing back to where it was."""
    from continuo.progress import bars

    targets = {name: position for name, position in was.items() if position > 0}
    deadline = asyncio.get_running_loop().time() + timeout
    with bars() as group:
        shown = {
            name: group.add(f"relay:{name}", total, unit="positions")
            for name, total in targets.items()
        }
        while True:
            now = {name: await store.load_cursor(f"relay:{name}") for name in targets}
            for name, position in now.items():
                shown[name].update(completed=min(position, targets[name]))
            behind = sorted(name for name in targets if now[name] < targets[name])
            if not behind:
                print(f"republished: {len(targets)} relay(s) back where they were")
                return 0
            if asyncio.get_running_loop().time() > deadline:
                print(
                    f"still republishing after {timeout:g}s: {', '.join(behind)} (is it running?)"
                )
                return 1
            await asyncio.sleep(0.5)


def _demo(argv: list[str]) -> int:
    from continuo.demo import main

    return main(argv)


def _evaluate(argv: list[str]) -> int:
    from continuo.evaluate import main

    return main(argv)


def _compare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="continuo compare",
        description="Replay a task's stored rows through each of its pipeline (spec) versions in "
        "this process, each alone (the same stored rows and label timing; a version learns the "
        "rows that carry its features, and none of governance's earlier choices of a race "
        "configuration), and print each one's prequential figures: evidence before a version is "
        "started (docs/pipelines.md). Reads the store (CONTINUO_STORE_URL); changes nothing.",
    )
    parser.add_argument("task")
    parser.add_argument(
        "versions", nargs="*", help="pipeline versions or unique prefixes (default: every one)"
    )
    parser.add_argument(
        "--from", dest="after", type=int, default=0, help="replay after this data version"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    return asyncio.run(_compare_pipelines(args.task, args.versions, args.after, args.json))


async def _compare_pipelines(task: str, wanted: list[str], after: int, as_json: bool) -> int:
    import json
    import time

    from continuo.progress import progress
    from services.trainer.service import replay_pipeline
    from shared.events.types import data_stream
    from shared.registry import spec_versions
    from shared.store.sql import open_event_store

    store = open_event_store(CommonSettings().store_url)
    try:
        versions = await spec_versions(store, task)
        if not versions:
            print(f"no task {task!r} in the store", file=sys.stderr)
            return 2
        chosen = list(versions)
        if wanted:
            chosen = []
            for prefix in wanted:
                found = [v for v in versions if v.startswith(prefix)]
                if len(found) != 1:
                    print(f"{prefix!r} names {len(found)} of {task}'s versions", file=sys.stderr)
                    return 2
                chosen += found
        last = await store.read_all(limit=1, streams=[data_stream(task)], descending=True)
        total = max(0, ((last[0].stream_version or 0) if last else 0) - after)
        figures: list[dict[str, Any]] = []
        for version in chosen:
            started = time.perf_counter()
            with progress(f"{task} {version[:12]}", total, unit="events") as bar:
                core = await replay_pipeline(
                    store, versions[version], after_version=after, progress=bar.advance
                )
            seconds = time.perf_counter() - started
            metrics = core.learner.metrics
            # A classifier's accuracy, recent accuracy and log loss; a regression's errors.
            names = ("accuracy", "recent_accuracy", "log_loss")
            if "mae" in metrics:
                names = ("mae", "recent_mae", "rmse")
            figures.append(
                {
                    "pipeline_version": version,
                    "inputs": len(versions[version].input_names),
                    "labelled": int(metrics.get("n_labelled", 0)),
                    **{name: metrics.get(name) for name in names},
                    "seconds": round(seconds, 2),
                    "events_per_s": round(total / max(seconds, 1e-9)),
                }
            )
    finally:
        await store.close()
    if as_json:
        print(json.dumps({"task": task, "after_version": after, "pipelines": figures}, indent=2))
        return 0
    print(f"{task}: {total:,} data events after version {after}, each version alone:")
    for f in figures:
        shown = (
            f"MAE {f['mae']:.4g}  recent {f['recent_mae']:.4g}  RMSE {f['rmse']:.4g}"
            if "mae" in f
            else f"accuracy {f['accuracy']:.4f}  recent {f['recent_accuracy']:.4f}  "
            f"log loss {f['log_loss']:.4f}"
        )
        print(
            f"  {f['pipeline_version'][:12]}  {f['inputs']:>3} inputs  {f['labelled']:>8,} "
            f"labelled  {shown}  {f['seconds']:.1f} s ({f['events_per_s']:,} events/s)"
        )
    return 0


def _keys(argv: list[str]) -> int:
    from services.governance.keys import main

    return main(argv)


COMMANDS = {
    "migrate": _migrate,
    "broker": _broker,
    "up": _up,
    "demo": _demo,
    "evaluate": _evaluate,
    "replay": _replay,
    "compare": _compare,
    "keys": _keys,
    **{name: handler(name) for name in OPERATOR_COMMANDS},
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    configure_logging("cli", level="warning")
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
