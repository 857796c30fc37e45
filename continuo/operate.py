"""The operator's commands: the running system as governance's HTTP API shows it, and its
decisions (promote, roll back, canaries, flags), from a terminal.

    continuo status [TASK ...]                       tasks, champion, canary, served accuracy, lag
    continuo models TASK                             the registry: every version and its status
    continuo promote TASK VERSION --reason TEXT      promote through the policy gate
    continuo rollback TASK VERSION --reason TEXT     back to an earlier promoted version
    continuo canary TASK [start VERSION --weight W | weight W | stop] --reason TEXT
    continuo flags TASK [set KEY VALUE | remove KEY] --reason TEXT
    continuo audit TASK [VERSION]                    bias audits, with the figures
    continuo trail TASK                              the decision trail, newest last

Environment: CONTINUO_GOVERNANCE_URL (default http://127.0.0.1:8003), CONTINUO_API_KEY (a
governance key: `continuo keys create`; viewer reads, operator decides), and for the lag in
`status`, CONTINUO_TRAINER_URL (8004) and CONTINUO_SERVING_URL (8002).

Exit codes: 0 done; 1 governance said no (a refusal by policy with its reasons, or any other
4xx: key, role, unknown task or version, invalid value); 2 usage (arguments, no API key);
3 governance unreachable or failing (connection, timeout, 5xx).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console
from rich.table import Table

from continuo.progress import on_terminal
from services.governance.settings import GovernanceSettings
from services.serving.settings import ServingSettings
from services.trainer.settings import TrainerSettings
from shared.events.types import drift_summary

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
NONE = "-"


def _local(settings: type[BaseSettings]) -> str:
    """Where a service listens by default (its settings' port, never read from the env here)."""
    return f"http://127.0.0.1:{settings.model_fields['port'].default}"


class OperatorSettings(BaseSettings):
    """Where the operator's commands find the services, and the key they present."""

    model_config = SettingsConfigDict(env_prefix="CONTINUO_", extra="ignore")

    governance_url: str = _local(GovernanceSettings)
    trainer_url: str = _local(TrainerSettings)
    serving_url: str = _local(ServingSettings)
    api_key: SecretStr = SecretStr("")
    # Seconds an HTTP call may take before the service counts as unreachable.
    http_timeout: float = 10.0


class UsageError(Exception):
    """Bad arguments or configuration (exit 2)."""


class Unreachable(Exception):
    """Governance did not answer, or failed (exit 3)."""


class Refused(Exception):
    """Governance answered with a 4xx: the policy's reasons, or what was wrong (exit 1)."""

    def __init__(self, status: int, detail: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.status, self.detail, self.reasons = status, detail, list(reasons)


# -- HTTP ------------------------------------------------------------------------------------------


def _detail(response: httpx.Response) -> tuple[str, list[str]]:
    """The message and reasons of an error body (`Problem`: detail is a text or a list)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase, []
    if not isinstance(body, dict):
        return str(body)[:300], []
    detail = body.get("detail", "")
    if isinstance(detail, list):  # validation errors: {loc, msg}
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}".lstrip(": ")
            for e in detail
            if isinstance(e, dict)
        )
    return str(detail), [str(r) for r in body.get("reasons") or []]


@dataclass
class Governance:
    """Governance's API with the operator's key; errors become Refused or Unreachable."""

    client: httpx.Client

    @classmethod
    def open(
        cls, settings: OperatorSettings, transport: httpx.BaseTransport | None = None
    ) -> Governance:
        key = settings.api_key.get_secret_value().strip()
        if not key:
            raise UsageError(
                "no API key: set CONTINUO_API_KEY to a governance key "
                "(continuo keys create --name you --role operator)"
            )
        return cls(
            httpx.Client(
                base_url=settings.governance_url.rstrip("/"),
                headers={"Authorization": f"Bearer {key}"},
                timeout=settings.http_timeout,
                transport=transport,
            )
        )

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        try:
            response = self.client.request(
                method, path, json=body, params={k: v for k, v in params.items() if v is not None}
            )
        except httpx.HTTPError as exc:
            raise Unreachable(
                f"governance at {self.client.base_url} is unreachable: {exc or type(exc).__name__}"
            ) from None
        if response.status_code >= 500:
            detail, _ = _detail(response)
            raise Unreachable(f"governance answered {response.status_code}: {detail}")
        if response.status_code >= 400:
            raise Refused(response.status_code, *_detail(response))
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, **params)


def _optional(url: str, timeout: float) -> Any:
    """A figure from another service (trainer, serving), or None if it cannot be had."""
    try:
        response = httpx.get(url, timeout=timeout)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


# -- formatting (pure) -----------------------------------------------------------------------------


def fmt(value: Any, digits: int = 4) -> str:
    """A figure for a table: numbers to `digits` places, None as a dash."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def arm(served: Mapping[str, Any] | None, share: bool = False) -> str:
    """`v12`, or `v12 (20%)` for a canary's share of entities."""
    if not served:
        return NONE
    text = f"v{served['model_version']}"
    return f"{text} ({served['share']:g}%)" if share else text


@dataclass(frozen=True)
class Served:
    """Served accuracy as `status` shows it (a regression's: its MAE, `metric`), and where the
    figure came from."""

    accuracy: float | None
    rows: int | None
    source: str
    metric: str = "accuracy"  # or "mae"

    def cell(self) -> str:
        if self.accuracy is None:
            return NONE
        figure = f"MAE {self.accuracy:.4g}" if self.metric == "mae" else f"{self.accuracy:.4f}"
        return figure + (f" ({self.rows:,} rows)" if self.rows else "")


def served_from_windows(windows: Sequence[Mapping[str, Any]]) -> Served:
    """The newest window of governance's served accuracy: the rows the champion and canary
    answered in it (shadows answer nobody), right over scored."""
    if not windows:
        return Served(None, None, "governance's served windows (none yet)")
    newest = max(w["to_position"] for w in windows)
    answered = [
        w for w in windows if w["to_position"] == newest and w.get("role") in ("champion", "canary")
    ]
    n = sum(int(w["n"]) for w in answered)
    source = "governance's newest served window"
    if any(w.get("abs_error") is not None for w in answered):  # a regression
        error = sum(float(w["abs_error"]) for w in answered)
        return Served(error / n if n else None, n or None, source, "mae")
    correct = sum(int(w["correct"]) for w in answered)
    return Served(correct / n if n else None, n or None, source)


def served_from_metrics(version: int, metrics: Mapping[str, Any]) -> Served:
    """The fallback: the champion's registry metrics, measured by the trainer when it was
    published (serving's answers on log-and-wait rows, all time)."""
    regression = "served_mae" in metrics
    return Served(
        metrics.get("served_mae" if regression else "served_accuracy"),
        int(metrics["served_n_labelled"]) if metrics.get("served_n_labelled") else None,
        f"the registry (v{version}'s metrics when it was published)",
        "mae" if regression else "accuracy",
    )


def behind(trainer: Mapping[str, Any] | None, online: Mapping[str, Any] | None) -> int | None:
    """How far the trainer is behind the task's data stream: the position of the newest data
    event the serving replica folded minus the trainer's (0: caught up; None: not known).
    Positions number every event of the store, so on a busy store this over-counts the task's
    own events; serving follows Kafka, so it can itself be a few hundred milliseconds behind."""
    if not trainer or not online or online.get("synced_position") is None:
        return None
    return max(0, int(online["synced_position"]) - int(trainer.get("last_position") or 0))


def lag_cell(trainer: Mapping[str, Any] | None, positions: int | None) -> str:
    """The lag column: positions behind, `(busy)` while a batch is in flight."""
    if not trainer:
        return NONE
    text = NONE if positions is None else f"{positions:,}"
    return text if trainer.get("settled", True) else f"{text} (busy)"


def trail_row(event: Mapping[str, Any]) -> tuple[str, str, str, str, str, str]:
    """One trail event as table cells: position, time, type, version, who, what."""
    p = event.get("payload") or {}
    what: list[str] = []  # facts first, then why
    if "outcome" in p:
        what.append(f"-> {p['outcome']}")
    if "weight" in p:
        what.append(f"weight {p['weight']:g}%")
    if "key" in p:
        what.append(f"{p['key']} = {json.dumps((p.get('flag') or {}).get('value'))}")
    if "passed" in p:
        what.append(f"{p.get('scope', '')} audit {'passed' if p['passed'] else 'failed'}".strip())
    arms = (p.get("arms") or []) if event.get("type") == "ServedScored" else []
    for scored in arms:
        what.append(
            f"v{scored.get('model_version')} {scored.get('role')} "
            f"{scored.get('correct')}/{scored.get('n')} right"
        )
    if event.get("type") == "ModelTrained" and isinstance(p.get("metrics"), Mapping):
        metrics = p["metrics"]
        learned = f"{p.get('n_learned_total', 0):,} labels learned"
        if "mae" in metrics or "recent_mae" in metrics:  # a regression
            what.append(f"{learned}, MAE {fmt(metrics.get('recent_mae', metrics.get('mae')))}")
        else:
            acc = metrics.get("recent_accuracy", metrics.get("accuracy"))
            what.append(f"{learned}, accuracy {fmt(acc)}")
    if event.get("type") == "DriftDetected":
        what.append(drift_summary(p.get("detector", ""), p.get("evidence") or {}))
    if "from_config" in p:  # the race switched its champion
        what.append(f"{p['from_config']} -> {p['to_config']}")
    elif "config" in p and event.get("type") in ("ConfigDropped", "ConfigChosen"):
        dropped = event.get("type") == "ConfigDropped"
        what.append(f"{p['config']} {'dropped from the race' if dropped else 'chosen'}")
    if "at_labelled" in p:
        what.append(f"at {p['at_labelled']:,} labels")
    if p.get("reason"):
        what.append(str(p["reason"]))
    what.extend(map(str, p.get("reasons") or []))
    version = p.get("model_version")
    return (
        fmt(event.get("position")),
        str(event.get("occurred_at", ""))[:19].replace("T", " "),
        str(event.get("type", "")),
        NONE if version is None else f"v{version}",
        str(p.get("decided_by") or p.get("by") or ""),
        "; ".join(what),
    )


def _audit_figures(report: Mapping[str, Any]) -> str:
    """Per attribute: its gaps (equalized odds, demographic parity; a regression's MAE ratio
    and difference)."""
    parts = []
    for name, figures in (report.get("attributes") or {}).items():
        if report.get("kind") == "regression":
            ratio, gap = figures.get("mae_ratio"), figures.get("mae_difference")
            parts.append(f"{name}: MAE ratio {fmt(ratio, 3)}, difference {fmt(gap, 3)}")
            continue
        eo, dp = (
            figures.get("equalized_odds_difference"),
            figures.get("demographic_parity_difference"),
        )
        parts.append(f"{name}: eq.odds {fmt(eo, 3)}, dp {fmt(dp, 3)}")
    return "; ".join(parts)


def _model_figure(metrics: Mapping[str, Any], *names: str) -> str:
    """The first of `names` in a model's metrics for a table; a regression's error (the same
    name with `accuracy` as `mae`) shown as "MAE x"."""
    for name in names:
        if metrics.get(name) is not None:
            return fmt(metrics[name])
    for name in names:
        error = metrics.get(name.replace("accuracy", "mae"))
        if error is not None:
            return f"MAE {error:.4g}"
    return NONE


# -- output ----------------------------------------------------------------------------------------


def console() -> Console:
    # Not a terminal: rows are never wrapped, so logs and pipes get one line a row (for grep).
    # Markup off: reasons and values are shown as given (a "[" in a reason is text).
    return Console(width=None if on_terminal() else 1000, markup=False, highlight=False)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    out = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for name in columns:
        out.add_column(name, overflow="fold")
    for row in rows:
        out.add_row(*row)
    return out


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# -- commands --------------------------------------------------------------------------------------


@dataclass
class Context:
    settings: OperatorSettings
    out: Console = field(default_factory=console)
    _gov: Governance | None = None

    @property
    def gov(self) -> Governance:
        if self._gov is None:
            self._gov = Governance.open(self.settings)
        return self._gov


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"continuo {prog}", description=description)


def _version(text: str) -> int:
    value = text.lstrip("vV")
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a model version: {text!r} (e.g. 12 or v12)")
    return int(value)


def _reason(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why (recorded with the decision)")


def served_accuracy(gov: Governance, task: str, champion: int | None) -> Served:
    """Governance's served-accuracy windows when it has the endpoint, else the champion's
    registry metrics (the source says which)."""
    try:
        return served_from_windows(gov.get(f"/v1/tasks/{task}/served-accuracy")["windows"])
    except Refused as exc:
        if exc.status != 404 or exc.detail != "Not Found":  # "Not Found": no such route
            raise
    if champion is None:
        return Served(None, None, "nothing (no champion yet)")
    model = gov.get(f"/v1/tasks/{task}/models/{champion}")
    return served_from_metrics(champion, model.get("metrics") or {})


def status(ctx: Context, argv: list[str]) -> int:
    parser = _parser("status", "Each task: champion, canary, shadows, served accuracy, lag.")
    parser.add_argument("tasks", nargs="*", metavar="TASK", help="default: every task")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    gov, settings = ctx.gov, ctx.settings
    names = args.tasks or [t["task"] for t in gov.get("/v1/tasks")["tasks"]]
    trainer = _optional(f"{settings.trainer_url}/v1/status", settings.http_timeout)
    tasks = []
    for name in names:
        routing = gov.get(f"/v1/tasks/{name}/routing")
        champion = (routing.get("champion") or {}).get("model_version")
        served = served_accuracy(gov, name, champion)
        learning = (trainer or {}).get("tasks", {}).get(name)
        online = _optional(f"{settings.serving_url}/v1/tasks/{name}/online", settings.http_timeout)
        tasks.append(
            {
                "task": name,
                "routing": routing,
                "served": {
                    # A classifier's accuracy, or a regression's MAE (`metric` says which).
                    "accuracy": served.accuracy if served.metric == "accuracy" else None,
                    "mae": served.accuracy if served.metric == "mae" else None,
                    "rows": served.rows,
                    "source": served.source,
                    "metric": served.metric,
                },
                "trainer": learning,
                "serving_online": online,
                "lag_positions": behind(learning, online),
            }
        )
    if args.json:
        _print_json({"tasks": tasks, "trainer_reachable": trainer is not None})
        return OK
    rows = []
    for t in tasks:
        r, learning = t["routing"], t["trainer"] or {}
        flags = ", ".join(sorted(r.get("flags") or {}))
        rows.append(
            (
                t["task"],
                arm(r.get("champion")) + (" KILLED" if r.get("killed") else ""),
                arm(r.get("canary"), share=True),
                ", ".join(arm(s) for s in r.get("shadows") or []) or NONE,
                Served(
                    t["served"][t["served"]["metric"]],
                    t["served"]["rows"],
                    "",
                    t["served"]["metric"],
                ).cell(),
                f"v{learning['model_version']}, {learning.get('learned', 0):,} labels"
                if learning.get("model_version")
                else NONE,
                lag_cell(t["trainer"], t["lag_positions"]),
                flags or NONE,
            )
        )
    columns = ("task", "champion", "canary", "shadows", "served acc.", "trainer", "lag", "flags")
    ctx.out.print(table(None, columns, rows))
    for t in tasks:
        ctx.out.print(f"served accuracy of {t['task']}: from {t['served']['source']}")
    if trainer is None:
        ctx.out.print(f"trainer unreachable at {settings.trainer_url}: no lag")
    else:
        ctx.out.print("lag: store positions between serving's newest data event and the trainer's")
    return OK


def models(ctx: Context, argv: list[str]) -> int:
    parser = _parser("models", "A task's model versions, their status and figures.")
    parser.add_argument("task")
    parser.add_argument("--last", type=int, default=None, help="only the newest N versions")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    answer = ctx.gov.get(f"/v1/tasks/{args.task}/models")
    versions = answer["models"][-args.last :] if args.last else answer["models"]
    if args.json:
        _print_json({**answer, "models": versions})
        return OK
    rows = []
    for m in versions:
        metrics, audit = m.get("metrics") or {}, m.get("audit")
        rows.append(
            (
                f"v{m['model_version']}",
                m["status"],
                m.get("role", ""),
                _model_figure(metrics, "recent_accuracy", "accuracy"),
                _model_figure(metrics, "served_accuracy"),
                NONE if audit is None else ("passed" if audit["passed"] else "failed"),
                fmt(m.get("n_learned_total")),
                fmt(m.get("last_position")),
                str(m.get("trained_at", ""))[:19].replace("T", " "),
            )
        )
    columns = (
        "version", "status", "role", "recent acc.", "served acc.", "audit", "labels", "through",
        "trained at",
    )  # fmt: skip
    champion = answer.get("champion")
    title = f"{args.task}: champion v{champion}" if champion else f"{args.task}: no champion"
    ctx.out.print(table(title, columns, rows))
    return OK


def _decided(ctx: Context, what: str, answer: Mapping[str, Any]) -> int:
    reasons = answer.get("reasons") or []
    ctx.out.print(what)
    for reason in reasons:
        ctx.out.print(f"  - {reason}")
    return OK


def promote(ctx: Context, argv: list[str]) -> int:
    parser = _parser("promote", "Promote a version by hand, through the task's policy gate.")
    parser.add_argument("task")
    parser.add_argument("version", type=_version)
    _reason(parser)
    args = parser.parse_args(argv)
    answer = ctx.gov.call(
        "POST",
        f"/v1/tasks/{args.task}/models/{args.version}/promote",
        {"reason": args.reason},
    )
    was = answer.get("previous_version")
    return _decided(
        ctx,
        f"{args.task}: v{args.version} promoted"
        + (f" (was v{was})" if was else "")
        + f" by {answer.get('promoted_by')}; policy:",
        answer,
    )


def rollback(ctx: Context, argv: list[str]) -> int:
    parser = _parser("rollback", "Set the champion back to an earlier promoted version.")
    parser.add_argument("task")
    parser.add_argument("version", type=_version, help="the version to go back to")
    _reason(parser)
    args = parser.parse_args(argv)
    answer = ctx.gov.call(
        "POST",
        f"/v1/tasks/{args.task}/rollback",
        {"model_version": args.version, "reason": args.reason},
    )
    ctx.out.print(
        f"{args.task}: rolled back to v{args.version} (from v{answer.get('from_version')}) "
        f"by {answer.get('rolled_back_by')}"
    )
    return OK


def _percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a weight is a percent of entities, 0-100: {text}")
    return value


def canary(ctx: Context, argv: list[str]) -> int:
    parser = _parser("canary", "Show, start, re-weight or stop a task's canary.")
    parser.add_argument("task")
    actions = parser.add_subparsers(dest="action", metavar="{start,weight,stop}")
    start = actions.add_parser(
        "start",
        prog="continuo canary TASK start",
        help="start VERSION as the canary on --weight percent",
    )
    start.add_argument("version", type=_version)
    start.add_argument("--weight", type=_percent, required=True, help="percent of entities")
    _reason(start)
    weight = actions.add_parser(
        "weight", prog="continuo canary TASK weight", help="change the running canary's share"
    )
    weight.add_argument("weight", type=_percent, help="percent of entities")
    _reason(weight)
    stop = actions.add_parser(
        "stop", prog="continuo canary TASK stop", help="stop the running canary"
    )
    _reason(stop)
    args = parser.parse_args(argv)
    base = f"/v1/tasks/{args.task}"
    if args.action is None:
        routing = ctx.gov.get(f"{base}/routing")
        running = routing.get("canary")
        ctx.out.print(
            f"{args.task}: canary {arm(running, share=True)}"
            if running
            else f"{args.task}: no canary running (champion {arm(routing.get('champion'))})"
        )
        return OK
    if args.action == "start":
        body = {"model_version": args.version, "weight": args.weight, "reason": args.reason}
        answer = ctx.gov.call("POST", f"{base}/canary", body)
        ctx.out.print(f"{args.task}: canary v{answer['model_version']} on {args.weight:g}%")
    elif args.action == "weight":
        answer = ctx.gov.call(
            "PATCH", f"{base}/canary", {"weight": args.weight, "reason": args.reason}
        )
        ctx.out.print(f"{args.task}: canary v{answer['model_version']} now on {args.weight:g}%")
    else:
        answer = ctx.gov.call("POST", f"{base}/canary/stop", {"reason": args.reason})
        ctx.out.print(f"{args.task}: canary v{answer['model_version']} stopped")
    return OK


def flag_value(text: str, kind: str | None) -> dict[str, Any]:
    """A flag from the command line: `true`/`false` are booleans, numbers numbers, anything
    else a string, unless `kind` says which."""
    lowered = text.strip().lower()
    if kind in (None, "boolean") and lowered in ("true", "false"):
        return {"type": "boolean", "value": lowered == "true"}
    if kind == "boolean":
        raise UsageError(f"a boolean flag is true or false, not {text!r}")
    if kind in (None, "number"):
        try:
            return {"type": "number", "value": float(text)}
        except ValueError:
            if kind == "number":
                raise UsageError(f"not a number: {text!r}") from None
    return {"type": "string", "value": text}


def flags(ctx: Context, argv: list[str]) -> int:
    parser = _parser("flags", "List, set or remove a task's flags.")
    parser.add_argument("task")
    parser.add_argument("--json", action="store_true", help="list as JSON")
    actions = parser.add_subparsers(dest="action", metavar="{set,remove}")
    put = actions.add_parser(
        "set",
        prog="continuo flags TASK set",
        help="set KEY to VALUE (true/false, a number, or text)",
    )
    put.add_argument("key")
    put.add_argument("value", nargs="?", help="omit with --flag-json")
    put.add_argument("--type", choices=("boolean", "number", "string"), dest="kind")
    put.add_argument(
        "--flag-json",
        help='the whole flag as JSON, e.g. \'{"type": "string", "value": "a", '
        '"variants": {"a": "a", "b": "b"}, "weights": {"a": 50, "b": 50}}\'',
    )
    _reason(put)
    remove = actions.add_parser("remove", prog="continuo flags TASK remove", help="remove KEY")
    remove.add_argument("key")
    _reason(remove)
    args = parser.parse_args(argv)
    base = f"/v1/tasks/{args.task}"
    if args.action is None:
        current = ctx.gov.get(f"{base}/routing").get("flags") or {}
        if args.json:
            _print_json(current)
            return OK
        rows = [
            (
                key,
                f.get("type", ""),
                json.dumps(f.get("value")),
                json.dumps(f.get("variants") or {}),
            )
            for key, f in sorted(current.items())
        ]
        ctx.out.print(table(f"{args.task}: flags", ("key", "type", "value", "variants"), rows))
        return OK
    if args.action == "remove":
        ctx.gov.call("PUT", f"{base}/flags/{args.key}", {"flag": None, "reason": args.reason})
        ctx.out.print(f"{args.task}: flag {args.key} removed")
        return OK
    if (args.value is None) == (args.flag_json is None):
        raise UsageError("give VALUE or --flag-json (one of them)")
    if args.flag_json is not None:
        try:
            flag = json.loads(args.flag_json)
        except ValueError as exc:
            raise UsageError(f"--flag-json is not JSON: {exc}") from None
    else:
        flag = flag_value(args.value, args.kind)
    ctx.gov.call("PUT", f"{base}/flags/{args.key}", {"flag": flag, "reason": args.reason})
    ctx.out.print(
        f"{args.task}: flag {args.key} = {json.dumps(flag.get('value'))} ({flag.get('type')})"
    )
    return OK


def audit(ctx: Context, argv: list[str]) -> int:
    parser = _parser("audit", "A task's bias audits (or one version's), with their figures.")
    parser.add_argument("task")
    parser.add_argument("version", type=_version, nargs="?")
    parser.add_argument("--scope", choices=("candidate", "live"))
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    base = f"/v1/tasks/{args.task}"
    if args.version is not None:
        found = ctx.gov.get(f"{base}/models/{args.version}/audits")["audits"]
        found = [a for a in found if args.scope is None or a["scope"] == args.scope]
    else:
        found = ctx.gov.get(f"{base}/audits", scope=args.scope)["audits"]
    if args.json:
        _print_json({"task": args.task, "audits": found})
        return OK
    if not found:
        ctx.out.print(f"{args.task}: no audits" + (f" of v{args.version}" if args.version else ""))
        return OK
    rows = [
        (
            f"v{a['model_version']}",
            a["scope"],
            "passed" if a["passed"] else "FAILED",
            fmt((a.get("window") or {}).get("rows")),
            _skill(a.get("report") or {}),
            _audit_figures(a.get("report") or {}),
            "; ".join(a.get("reasons") or []) or NONE,
        )
        for a in found
    ]
    columns = ("version", "scope", "verdict", "rows", "bal. acc. / R^2", "gaps", "reasons")
    ctx.out.print(table(f"{args.task}: audits", columns, rows))
    if args.version is not None:
        ctx.out.print(_groups_table(found[-1]))
    return OK


def _skill(report: Mapping[str, Any]) -> str:
    """An audit's overall skill: balanced accuracy (a multiclass audit's, with the floor it
    applied), or a regression's R^2."""
    if report.get("kind") == "regression":
        return NONE if report.get("r2") is None else f"R^2 {report['r2']:.3f}"
    floor = report.get("balanced_accuracy_floor")
    skill = fmt(report.get("balanced_accuracy"), 3)
    return skill if floor is None else f"{skill} (floor {floor:.2f})"


def _groups_table(audited: Mapping[str, Any]) -> Table:
    """The newest audit's figures per group (a regression's: errors and mean answers)."""
    report = audited.get("report") or {}
    title = f"v{audited['model_version']} ({audited['scope']}), per group"
    if report.get("kind") == "regression":
        rows = [
            (
                name,
                group,
                fmt(g.get("count")),
                fmt(g.get("mae"), 3),
                fmt(g.get("rmse"), 3),
                fmt(g.get("mean_prediction"), 3),
                fmt(g.get("mean_label"), 3),
                "yes" if g.get("in_pass_fail") else "no (too few)",
            )
            for name, figures in (report.get("attributes") or {}).items()
            for group, g in (figures.get("groups") or {}).items()
        ]
        columns = ("attribute", "group", "n", "MAE", "RMSE", "mean answer", "mean label", "judged")
        return table(title, columns, rows)
    rows = []
    for name, figures in (report.get("attributes") or {}).items():
        for group, g in (figures.get("groups") or {}).items():
            rows.append(
                (
                    name,
                    group,
                    fmt(g.get("count")),
                    fmt(g.get("selection_rate"), 3),
                    fmt(g.get("accuracy"), 3),
                    fmt(g.get("false_positive_rate"), 3),
                    fmt(g.get("false_negative_rate"), 3),
                    "yes" if g.get("in_pass_fail") else "no (too few)",
                )
            )
    columns = ("attribute", "group", "n", "selected", "accuracy", "FPR", "FNR", "judged")
    return table(title, columns, rows)


def trail(ctx: Context, argv: list[str]) -> int:
    parser = _parser("trail", "A task's decision trail: decisions, audits, models, in order.")
    parser.add_argument("task")
    parser.add_argument("--type", action="append", dest="types", help="only this event type")
    parser.add_argument("--last", type=int, default=30, help="the newest N events (default 30)")
    parser.add_argument("--all", action="store_true", help="every event, not just the last N")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args(argv)
    if args.last < 1:
        raise UsageError("--last must be at least 1")
    events: deque[dict[str, Any]] = deque(maxlen=None if args.all else args.last)
    after: int | None = 0
    while after is not None:
        page = ctx.gov.get(f"/v1/tasks/{args.task}/trail", after=after, limit=5000, type=args.types)
        events.extend(page["events"])
        after = page["next_after"]
    if args.json:
        for event in events:
            print(json.dumps(event, sort_keys=True, default=str))
        return OK
    columns = ("position", "at (UTC)", "event", "version", "by", "what")
    ctx.out.print(table(f"{args.task}: trail", columns, (trail_row(e) for e in events)))
    return OK


def pipelines(ctx: Context, argv: list[str]) -> int:
    parser = _parser(
        "pipelines",
        "List a task's pipeline (spec) versions, register a new one, or start one "
        "(docs/pipelines.md).",
    )
    parser.add_argument("task")
    actions = parser.add_subparsers(dest="action", metavar="{register,start}")
    register = actions.add_parser(
        "register",
        prog="continuo pipelines TASK register",
        help="register the spec in FILE (YAML, as in tasks/) as a new version",
    )
    register.add_argument("file")
    _reason(register)
    start = actions.add_parser(
        "start",
        prog="continuo pipelines TASK start",
        help="the trainer runs VERSION (a prefix will do), caught up from --from",
    )
    start.add_argument("version")
    start.add_argument(
        "--from", dest="from_version", type=int, default=0, help="data stream version (0: all)"
    )
    _reason(start)
    args = parser.parse_args(argv)
    base = f"/v1/tasks/{args.task}/pipelines"
    if args.action == "register":
        try:
            with open(args.file, encoding="utf-8") as handle:
                document = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"{args.file}: {exc}") from None
        answer = ctx.gov.call("POST", base, {"spec": document, "reason": args.reason})
        said = "registered" if answer["registered"] else "already registered"
        ctx.out.print(f"{args.task}: pipeline {answer['pipeline_version'][:12]} {said}")
        return OK
    listing = ctx.gov.get(base)
    if args.action == "start":
        found = [
            v["pipeline_version"]
            for v in listing["versions"]
            if v["pipeline_version"].startswith(args.version)
        ]
        if len(found) != 1:
            raise UsageError(
                f"{args.version!r} names {len(found)} of the task's pipeline versions, not one"
            )
        body = {"from_version": args.from_version, "reason": args.reason}
        ctx.gov.call("POST", f"{base}/{found[0]}/start", body)
        ctx.out.print(
            f"{args.task}: the trainer runs pipeline {found[0][:12]} from its next batch, "
            f"after replaying the data stream from version {args.from_version}"
        )
        return OK
    rows = [
        (
            v["pipeline_version"][:12],
            "yes" if v["pipeline_version"] == listing["running"] else "",
            "yes" if v["pipeline_version"] == listing["champion"] else "",
            ", ".join(v["input_names"]),
        )
        for v in listing["versions"]
    ]
    columns = ("pipeline", "trainer runs it", "champion's", "inputs")
    ctx.out.print(table(f"{args.task}: pipeline versions", columns, rows))
    return OK


COMMANDS: dict[str, Callable[[Context, list[str]], int]] = {
    "status": status,
    "models": models,
    "promote": promote,
    "rollback": rollback,
    "canary": canary,
    "flags": flags,
    "audit": audit,
    "trail": trail,
    "pipelines": pipelines,
}


def run(command: str, argv: list[str], settings: OperatorSettings | None = None) -> int:
    """Run one operator command; errors are printed to stderr and become the exit code."""
    prog = f"continuo {command}"
    ctx = Context(settings or OperatorSettings())
    try:
        return COMMANDS[command](ctx, argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return int(exc.code or 0) if isinstance(exc.code, int) else USAGE
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return USAGE
    except Unreachable as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return UNREACHABLE
    except Refused as exc:
        print(f"{prog}: {refusal(exc)}", file=sys.stderr)
        return REFUSED
    finally:
        if ctx._gov is not None:
            ctx._gov.client.close()


def refusal(exc: Refused) -> str:
    """What governance said no to, and why: every reason on its own line."""
    head = {
        401: "not authenticated",
        403: "not allowed",
        404: "not found",
        409: "refused",
        422: "invalid",
    }.get(exc.status, "refused")
    detail = "" if exc.detail in ("", "refused") else f": {exc.detail}"
    lines = [f"{head} ({exc.status}){detail}"]
    lines += [f"  - {reason}" for reason in exc.reasons]
    return "\n".join(lines)


def handler(command: str) -> Callable[[list[str]], int]:
    """The `continuo` CLI's entry for one operator command."""
    return lambda argv: run(command, argv)
