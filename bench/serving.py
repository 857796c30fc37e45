"""Serving under load, against a bare FastAPI + LightGBM app, in the same run on the same machine;
then decisions reaching two serving replicas under load (propagation) and a rollback under load.

    .venv/bin/python bench/serving.py [--seconds 10] [--rounds 3] [--no-write]

1. Starts the four services (embedded broker, SQLite store, Redis fast path if Redis answers) with
   a synthetic 4-feature task (`continuo/loop.py`, no sensitive attributes), streams 3,000 rows
   through serving, and has an operator start a canary (50% of entities) and a shadow (every
   request) and set flags: champion + canary + shadow + flags on.
2. Trains one LightGBM booster on the same rows and starts `bench/bare_serving.py` with it.
3. Alternating the two apps in each round: single-record predict at 1 connection, one request
   at a time timed by the client (latency p50/p99; `http.client`, the same client cost for both),
   and at 16 connections with wrk (throughput); the same body, path and entities for both.
   Serving is measured without log and wait (the caller does not record the rows: an answer
   that writes to the store first is a different request) and, as a second row, with it.
4. Starts a second serving replica; under wrk load on both, makes decisions through governance
   (canary re-weights) and measures, per decision, the time until both replicas' `/routing`
   shows it; then rolls the champion back and counts failed requests.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import lightgbm as lgb
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from continuo.loop import FEATURES, drift_stream, loop_spec, with_every_arm  # noqa: E402
from continuo.stack import Stack, write_task_specs  # noqa: E402
from shared.broker import free_port  # noqa: E402
from shared.settings import CommonSettings  # noqa: E402
from shared.tasks import PromotionPolicy  # noqa: E402

SECTION = "Serving under load (bench/serving.py)"
TASK = "serve-bench"
ROWS = 3000
ROW = {"x1": 0.31, "x2": 0.72, "x3": 0.15, "x4": 0.93}
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local i = 0
request = function()
  i = i + 1
  local body = string.format(
    '{"features": {"x1": 0.31, "x2": 0.72, "x3": 0.15, "x4": 0.93}, "entity_id": "entity-%%d"%s}',
    i %% 1000)
  return wrk.format(nil, nil, nil, body)
end
"""


def wrk(url: str, connections: int, seconds: float, script: Path) -> dict[str, float]:
    """One wrk run: requests/s, p50 and p99 in ms, and failures (non-2xx and socket errors)."""
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = {
        q: _ms(v, unit) for q, v, unit in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)\b", out)
    }
    failures = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    for errors in re.findall(r"Socket errors: (.*)", out):
        failures += sum(int(n) for n in re.findall(r"\d+", errors))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": latency["50"],
        "p99": latency["99"],
        "failures": failures,
    }


def sequential(url: str, seconds: float, *, record: bool, bare: bool) -> dict[str, float]:
    """One connection, one request at a time, timed by the client (wrk's own latency figures at
    one connection were not consistent with its request rate here, so they are not used):
    requests/s, p50 and p99 in ms, failures."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port)
    latencies, failures, i = [], 0, 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        i += 1
        body: dict[str, Any] = {"features": ROW, "entity_id": f"entity-{i % 1000}"}
        if not bare:
            body["record"] = record
        payload = json.dumps(body)
        t = time.perf_counter()
        conn.request("POST", parts.path, payload, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t)
        failures += response.status != 200
    elapsed = time.perf_counter() - started
    conn.close()
    ms = 1000 * np.array(latencies)
    return {
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "failures": failures,
    }


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def bare_model(workdir: Path) -> Path:
    """One LightGBM booster on the same rows serving's models learned."""
    features, labels, _ = drift_stream(ROWS, drift_at=ROWS, groups=False)
    X = np.array([[row[f] for f in FEATURES] for row in features])
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 31, "verbose": -1, "seed": 7},
        lgb.Dataset(X, np.array(labels)),
        num_boost_round=40,
    )
    path = workdir / "bare-model.txt"
    booster.save_model(str(path))
    return path


async def _ready(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                await client.get(url)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def redis_answers() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(CommonSettings().redis_url, socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


async def propagation(
    stack: Stack, replicas: list[str], script: Path, seconds: float
) -> dict[str, Any]:
    """Decisions under load on both replicas: seconds until every replica applies each one,
    then a rollback, and the failed requests of the whole time."""
    base = f"/v1/tasks/{TASK}"
    loads = [
        subprocess.Popen(
            [
                "wrk",
                "-t1",
                "-c8",
                f"-d{int(seconds)}s",
                "--latency",
                "-s",
                str(script),
                f"{stack.url(r)}{base}/predict",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in replicas
    ]
    delays: list[float] = []
    rollback: dict[str, Any] = {}
    async with (
        httpx.AsyncClient(
            base_url=stack.url("governance"), headers=stack.governance_headers(), timeout=30
        ) as gov,
        httpx.AsyncClient(timeout=30) as client,
    ):

        async def applied(check: Any) -> float:
            started = time.perf_counter()
            pending = set(replicas)
            while pending:
                for r in list(pending):
                    routing = (await client.get(f"{stack.url(r)}{base}/routing")).json()
                    if check(routing):
                        pending.discard(r)
                await asyncio.sleep(0.002)
            return time.perf_counter() - started

        await asyncio.sleep(1.0)
        for i in range(20):
            weight = 30 if i % 2 == 0 else 50
            started = time.perf_counter()
            decided = await gov.patch(
                f"{base}/canary", json={"weight": weight, "reason": "propagation benchmark"}
            )
            version = decided.json()["stream_version"]
            await applied(lambda r, v=version: r["stream_version"] >= v)
            delays.append(time.perf_counter() - started)
            await asyncio.sleep(0.2)
        models = (await gov.get(f"{base}/models")).json()["models"]
        champion = next(m["model_version"] for m in models if m["status"] == "champion")
        earlier = max(m["model_version"] for m in models if m["status"] == "retired")
        started = time.perf_counter()
        back = await gov.post(
            f"{base}/rollback", json={"model_version": earlier, "reason": "rollback benchmark"}
        )
        if back.status_code != 200:
            raise RuntimeError(f"rollback refused: {back.text}")
        await applied(lambda r: (r["champion"] or {}).get("model_version") == earlier)
        rollback = {"from": champion, "to": earlier, "seconds": time.perf_counter() - started}
    failures, answered = 0, 0
    for load in loads:
        out, _ = load.communicate()
        failures += sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
        for errors in re.findall(r"Socket errors: (.*)", out):
            failures += sum(int(n) for n in re.findall(r"\d+", errors))
        answered += int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    d = np.array(delays)
    return {
        "p50": float(np.percentile(d, 50)),
        "p95": float(np.percentile(d, 95)),
        "max": float(d.max()),
        "decisions": len(delays),
        "rollback": rollback,
        "requests": answered,
        "failures": failures,
    }


async def run(seconds: float, rounds: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="continuo-serving-bench-"))
    spec = loop_spec(TASK, publish_every=500).model_copy(
        update={"sensitive": (), "promotion": PromotionPolicy()}
    )
    stack = Stack(
        workdir,
        store_url=f"sqlite+aiosqlite:///{workdir / 'events.db'}",
        env_overrides=write_task_specs(workdir / "tasks", [spec]),
    )
    await stack.start()
    bare = None
    try:
        print("- streaming rows, then canary + shadow + flags", file=sys.stderr, flush=True)
        routing = await with_every_arm(stack, TASK, rows=ROWS, groups=False)
        port = free_port()
        bare = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bare_serving.py")],
            env={
                **os.environ,
                "MODEL": str(bare_model(workdir)),
                "FEATURES": ",".join(FEATURES),
                "PORT": str(port),
            },
        )
        bare_url = f"http://127.0.0.1:{port}/v1/tasks/{TASK}/predict"
        await _ready(f"http://127.0.0.1:{port}/docs")
        serving_url = f"{stack.url('serving')}/v1/tasks/{TASK}/predict"
        scripts = {}
        for name, extra in (
            ("bare", ""),
            ("plain", ', "record": false'),
            ("record", ', "record": true'),
        ):
            scripts[name] = workdir / f"{name}.lua"
            scripts[name].write_text(WRK_SCRIPT % extra)
        figures: dict[str, list[dict[str, float]]] = {}
        for r in range(rounds):
            print(f"- round {r + 1} of {rounds}", file=sys.stderr, flush=True)
            for label, url, script in (
                ("bare", bare_url, scripts["bare"]),
                ("serving", serving_url, scripts["plain"]),
                ("serving, log and wait", serving_url, scripts["record"]),
            ):
                one = sequential(
                    url, seconds, record=label.endswith("log and wait"), bare=label == "bare"
                )
                many = wrk(url, 16, seconds, script)
                figures.setdefault(label, []).append(
                    {
                        "p50": one["p50"],
                        "p99": one["p99"],
                        "rps1": one["rps"],
                        "rps16": many["rps"],
                        "failures": one["failures"] + many["failures"],
                    }
                )
        bare.terminate()
        bare = None
        print("- two replicas: propagation and rollback under load", file=sys.stderr, flush=True)
        second = await stack.add_replica("serving")
        spread = await propagation(stack, ["serving", second], scripts["plain"], 12.0)
    finally:
        if bare is not None:
            bare.terminate()
        stack.stop()
    return {"figures": figures, "routing": routing, "propagation": spread, "redis": redis_answers()}


def report(result: dict[str, Any], command: str, seconds: float, rounds: int) -> str:
    figures, routing, spread = result["figures"], result["routing"], result["propagation"]

    def med(label: str, key: str) -> float:
        return statistics.median(f[key] for f in figures[label])

    lines = [
        f"Command: `{command}` ({date.today().isoformat()}), this 2-core machine, wrk and both "
        f"apps sharing it; {rounds} rounds of {seconds:g} s runs, the apps alternating in each "
        "round; medians of the rounds (min-max in brackets). One uvicorn process each. Serving "
        f"routes with champion v{routing['champion']['model_version']}, canary "
        f"v{routing['canary']['model_version']} on {routing['canary']['share']:g}% of entities, "
        f"shadow v{routing['shadows'][0]['model_version']} on every request, and flags "
        f"({', '.join(routing['flags'])}); requests rotate over 1,000 entities.",
        "",
        "| app | p50 ms (1 conn) | p99 ms (1 conn) | req/s (1 conn) | req/s (16 conn) | "
        "throughput vs bare (16 conn) | failed requests |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    bare16 = med("bare", "rps16")
    for label, runs in figures.items():

        def span(key: str, fmt: str, runs: list[dict[str, float]] = runs) -> str:
            values = [f[key] for f in runs]
            return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

        ratios = [f["rps16"] / b["rps16"] for f, b in zip(runs, figures["bare"], strict=True)]
        lines.append(
            f"| {label} | {span('p50', '.2f')} | {span('p99', '.2f')} | {span('rps1', ',.0f')} "
            f"| {span('rps16', ',.0f')} | {med(label, 'rps16') / bare16:.2f}x "
            f"(per round {min(ratios):.2f}-{max(ratios):.2f}) | "
            f"{sum(int(f['failures']) for f in runs)} |"
        )
    rb = spread["rollback"]
    lines += [
        "",
        f"**Propagation** (two serving replicas, each under wrk load at 8 connections; Redis "
        f"fast path {'on' if result['redis'] else 'off: Kafka only'}): from governance "
        "accepting a decision to both replicas' `/routing` showing it, over "
        f"{spread['decisions']} canary re-weights: p50 {1000 * spread['p50']:.0f} ms, p95 "
        f"{1000 * spread['p95']:.0f} ms, max {1000 * spread['max']:.0f} ms. **Rollback** "
        f"v{rb['from']} -> v{rb['to']} reached both replicas in {1000 * rb['seconds']:.0f} ms. "
        f"Requests during it all: {spread['requests']:,}, failed: {spread['failures']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench/serving.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    result = asyncio.run(run(args.seconds, args.rounds))
    command = ("python bench/serving.py " + " ".join(argv)).strip()
    text = report(result, command, args.seconds, args.rounds)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
