"""Routing decisions: canaries, shadows and flags, by people (with roles and reasons) and by the
canary analysis, each an event on the task's deployment stream, through the same policy gate as
promotions.

By people: start, re-weight and stop a canary; start and stop shadows; set and remove flags (the
kill switch is a flag). By the analysis, as the trainer's `ArmsScored` evidence arrives: a shadow
that beats the champion on the same rows becomes the canary; a canary that beats the champion on
its own traffic is promoted, one that is worse (or trips a guardrail) rolled back, one that shows
no difference within the limits stopped as inconclusive. After a drift, the challengers the
trainer publishes start as shadows. Nobody needs to act; every step is in the trail with its
evidence.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from services.governance.canary import (
    Analysis,
    Arm,
    Paired,
    Verdict,
    canary_analysis,
    guardrails,
    own_traffic_cannot_judge,
    shadow_analysis,
)
from services.governance.errors import Conflict, Invalid
from services.governance.policy import Verdict as GateVerdict
from shared.arm_health import ArmHealth
from shared.deployments import (
    KILL_SWITCH,
    LOG_AND_WAIT,
    ONLINE_FEATURES,
    POLICY,
    SHADOW_SAMPLE,
    DeploymentState,
    Flag,
)
from shared.events.envelope import Envelope, Payload
from shared.events.types import (
    ArmsScored,
    ArmsServed,
    CanaryEnded,
    CanaryStarted,
    CanaryWeightChanged,
    FlagChanged,
    ModelPromoted,
    ModelTrained,
    ShadowStarted,
    ShadowStopped,
    deployment_stream,
    governance_stream,
)
from shared.registry import spec_versions
from shared.tasks import reads_within

if TYPE_CHECKING:
    from services.governance.auth import Principal
    from services.governance.service import Governance

log = structlog.get_logger(__name__)

# The type each flag serving reads must have.
BUILT_IN_FLAGS = {
    KILL_SWITCH: "boolean",
    LOG_AND_WAIT: "boolean",
    ONLINE_FEATURES: "boolean",
    SHADOW_SAMPLE: "number",
}


class RoutingDecisions:
    """Canary, shadow and flag decisions of every task (governance's routing half)."""

    def __init__(self, gov: Governance) -> None:
        self.gov = gov
        # Always-valid p-values are running minima: the smallest seen per arm so far.
        self._p: dict[tuple[str, str, int], float] = {}
        # Serving's reports added up per canary (task, version, since): the position read to,
        # the champion's arm and the canary's.
        self._served: dict[tuple[str, int, int], tuple[int, ArmHealth, ArmHealth]] = {}

    # -- checks ---------------------------------------------------------------------------------

    async def _routable(
        self, task: str, version: int, state: DeploymentState, role: str
    ) -> ModelTrained:
        """The version, if it may be a canary or shadow: it exists, is not the champion, was not
        refused or rejected, and (for a canary, which answers users) passed its audit where the
        task's policy requires one."""
        trained = await self.gov.trained(task, version)  # NotFound -> 404
        reasons = []
        if state.answering() is not None and state.answering()[0] == version:  # type: ignore[index]
            reasons.append(f"version {version} is the champion")
        if version in state.refused:
            reasons.append(f"version {version} was refused promotion")
        if state.rejections.get(version):
            reasons.append(f"version {version} was rejected by {state.rejections[version][0]}")
        if role == "canary":
            spec = await self.gov.model_spec(trained)
            if spec.promotion.require_audit:
                audit = await self.gov.candidate_audit(task, version)
                if audit is None:
                    reasons.append(f"version {version} has no bias audit (the policy needs one)")
                elif not audit.passed:
                    reasons += [f"bias audit failed: {r}" for r in audit.reasons]
        reasons += await self._pipeline_reasons(task, trained, state, role)
        if reasons:
            raise Conflict(reasons)
        return trained

    async def _pipeline_reasons(
        self, task: str, trained: ModelTrained, state: DeploymentState, role: str
    ) -> list[str]:
        """An arm runs beside the champion only if the trainer scores it (a model of the
        pipeline the task runs) and serving can answer it (it reads only features the
        champion's spec validates)."""
        mine, runs = trained.pipeline_version, await self.gov.pipelines.decided(task, state)
        if mine != runs:
            return [
                f"version {trained.model_version} was trained under pipeline {mine[:12]}, not "
                f"the one the task runs ({runs[:12]}): the trainer would not score it as a {role}"
            ]
        answering = state.answering()
        if answering is None:
            return []
        theirs = await self.gov.pipeline_of(task, answering[0], state)
        specs = await spec_versions(self.gov.store, task)
        if theirs != mine and mine in specs and theirs in specs:
            if not reads_within(specs[mine], specs[theirs]):
                return [
                    f"version {trained.model_version} (pipeline {mine[:12]}) reads features the "
                    f"champion's pipeline ({theirs[:12]}) does not take: serving could not "
                    f"answer it as a {role}"
                ]
        return []

    # -- by people ------------------------------------------------------------------------------

    async def _decide(
        self, task: str, decision: Callable[[DeploymentState], Awaitable[Payload]]
    ) -> dict[str, Any]:
        """One decision on the task's current state, under its lock: `decision` checks the state
        (raising Conflict, so nothing is recorded) and makes the event."""
        async with self.gov.task_locks[task]:
            state = await self.gov.deployment_state(task)
            [event] = await self.gov.decide_all(task, [await decision(state)], state)
        return _decision(event)

    async def start_canary(
        self, task: str, version: int, weight: float, who: Principal, reason: str
    ) -> dict[str, Any]:
        async def decision(state: DeploymentState) -> Payload:
            if state.canary is not None:
                raise Conflict(
                    [
                        f"a canary is already running: version {state.canary.model_version} "
                        "(stop it first)"
                    ]
                )
            if state.killed:
                raise Conflict(["the kill switch is on: no canary until it is off"])
            if version in state.shadows:
                # A version is one arm at a time: a shadow scores the rows others answer.
                raise Conflict([f"version {version} is a shadow (stop it first)"])
            trained = await self._routable(task, version, state, "canary")
            return CanaryStarted(
                task=task,
                model_version=version,
                artifact_sha256=trained.artifact_sha256,
                weight=weight,
                reason=reason,
                decided_by=who.name,
                pipeline_version=trained.pipeline_version,
            )

        return await self._decide(task, decision)

    async def set_canary_weight(
        self, task: str, weight: float, who: Principal, reason: str
    ) -> dict[str, Any]:
        async def decision(state: DeploymentState) -> Payload:
            canary = _running_canary(task, state)
            return CanaryWeightChanged(
                task=task, model_version=canary, weight=weight, reason=reason, decided_by=who.name
            )

        return await self._decide(task, decision)

    async def stop_canary(self, task: str, who: Principal, reason: str) -> dict[str, Any]:
        async def decision(state: DeploymentState) -> Payload:
            canary = _running_canary(task, state)
            return CanaryEnded(
                task=task,
                model_version=canary,
                outcome="stopped",
                reason=reason,
                decided_by=who.name,
            )

        return await self._decide(task, decision)

    async def start_shadow(
        self,
        task: str,
        version: int,
        sample_rate: float,
        who: Principal | None,
        reason: str,
        evidence: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        async def decision(state: DeploymentState) -> Payload:
            if version in state.shadows:
                raise Conflict([f"version {version} is already a shadow"])
            if state.canary is not None and state.canary.model_version == version:
                raise Conflict([f"version {version} is the canary (stop it first)"])
            trained = await self._routable(task, version, state, "shadow")
            return ShadowStarted(
                task=task,
                model_version=version,
                artifact_sha256=trained.artifact_sha256,
                sample_rate=sample_rate,
                reason=reason,
                decided_by=who.name if who is not None else POLICY,
                evidence=evidence or {},
                pipeline_version=trained.pipeline_version,
            )

        return await self._decide(task, decision)

    async def stop_shadow(
        self, task: str, version: int, who: Principal, reason: str
    ) -> dict[str, Any]:
        async def decision(state: DeploymentState) -> Payload:
            if version not in state.shadows:
                raise Conflict([f"version {version} is not a shadow"])
            return ShadowStopped(
                task=task,
                model_version=version,
                outcome="stopped",
                reason=reason,
                decided_by=who.name,
            )

        return await self._decide(task, decision)

    async def set_flag(
        self, task: str, key: str, flag: dict[str, Any] | None, who: Principal, reason: str
    ) -> dict[str, Any]:
        """Set a flag (or remove it with None); a built-in flag must have its type."""
        spec = await self.gov.spec(task)  # 404 for an unknown task
        prefix = ONLINE_FEATURES + "."  # a flag per online feature: online_features.<name>
        feature = key[len(prefix) :] if key.startswith(prefix) else None
        if feature is not None and feature not in spec.online_names:
            raise Invalid(
                f"flag {key!r}: task {task!r} has no online feature {feature!r} "
                f"(it has: {', '.join(spec.online_names) or 'none'})"
            )
        if flag is not None:
            try:
                checked = Flag.model_validate(flag)
            except ValidationError as exc:
                raise Invalid(f"flag {key!r}: {exc.errors()[0]['msg']}") from None
            wanted = "boolean" if feature is not None else BUILT_IN_FLAGS.get(key)
            if wanted is not None and checked.type != wanted:
                raise Invalid(
                    f"flag {key!r} is read by serving as a {wanted}, not a {checked.type}"
                )
            if checked.variants and checked.value not in checked.variants.values():
                raise Invalid(
                    f"flag {key!r}: its value (the default, for requests without an entity) "
                    "must be one of its variants' values"
                )
            if key == SHADOW_SAMPLE and not all(
                0.0 <= float(v) <= 1.0  # type: ignore[arg-type]
                for v in [checked.value, *checked.variants.values()]
            ):
                raise Invalid(f"flag {key!r} is a share of requests: 0 to 1")
            flag = checked.model_dump(mode="json")

        async def decision(state: DeploymentState) -> Payload:
            if flag is None and key not in state.flags:
                raise Conflict([f"task {task!r} has no flag {key!r}"])
            if key == KILL_SWITCH and flag is not None and flag["value"] is True:
                if state.answering() is None:
                    raise Conflict([f"task {task!r} has no champion to go back to"])
            return FlagChanged(task=task, key=key, flag=flag, reason=reason, decided_by=who.name)

        return await self._decide(task, decision)

    # -- by the analysis --------------------------------------------------------------------------

    async def on_challenger(self, envelope: Envelope) -> None:
        """A challenger the trainer published (after a drift), or an entrant (a configuration of
        its race, the runner-up), starts as a shadow if the policy runs that role and
        there is room; a newer version of one the policy runs takes its place (as the shadow, or
        as the canary)."""
        trained = envelope.data()
        assert isinstance(trained, ModelTrained)
        spec = await self.gov.model_spec(trained)
        policy = spec.promotion.canary
        audit = await self.gov.candidate_audit(trained.task, trained.model_version)
        if audit is not None and not audit.passed:
            await self.gov.refuse(envelope, [f"bias audit failed: {r}" for r in audit.reasons])
            return
        entrant = trained.role == "entrant"
        runs = policy.shadow_entrants if entrant else policy.shadow_challengers
        if runs and await self._supersede(trained, envelope):
            return  # it is the canary now
        state = await self.gov.deployment_state(trained.task)
        if not runs or len(state.shadows) >= policy.max_shadows:
            log.info(
                "governance.challenger_not_shadowed",
                task=trained.task,
                version=trained.model_version,
                shadows=len(state.shadows),
            )
            return
        try:
            await self.start_shadow(
                trained.task,
                trained.model_version,
                1.0,
                None,
                (
                    f"entrant {trained.config}, the runner-up of the trainer's race "
                    f"({trained.metrics.get('race_wins', 0):.0f} disputed rows won, "
                    f"{trained.metrics.get('race_losses', 0):.0f} lost): runs as a live shadow"
                    if entrant
                    else f"challenger {trained.config} published after a drift: runs as a live "
                    "shadow"
                ),
                {
                    "config": trained.config,
                    "n_learned": trained.n_learned_total,
                    "replaces": trained.parent_version,
                },
            )
        except Conflict as exc:
            log.info(
                "governance.challenger_not_shadowed",
                task=trained.task,
                version=trained.model_version,
                reasons=exc.reasons,
            )

    async def _supersede(self, trained: ModelTrained, envelope: Envelope) -> bool:
        """Stop the older challengers the policy runs (or entrants, if `trained` is one), as
        shadows or as the canary it made of one, and return whether `trained` took the canary's
        place.

        A challenger goes on learning after it is published, and each newer version of it (its
        `parent_version` is the one before) replaces the one running (outcome `replaced`): a
        canary made of it stays a canary, at its weight, with the newer version (the analysis
        starts again on that version's own traffic), if that version may be a canary. A
        challenger of a later drift supersedes those of earlier ones (outcome `superseded`):
        they learned a concept that has since changed again. Left running, a frozen challenger
        from before the second of two close drifts won as a shadow on rows answered by a
        champion that had not yet caught up, then answered (as the canary) worse than the
        champion had become. Arms a person started are left to people."""
        task = trained.task
        new = trained.model_version
        async with self.gov.task_locks[task]:
            state = await self.gov.deployment_state(task)
            arms = [*state.shadows.values(), *([state.canary] if state.canary else [])]
            decisions: list[Payload] = []
            for arm in arms:
                version = arm.model_version
                if version >= new:
                    continue
                started = await self._started(task, arm.since)
                if started is None or started.payload.get("decided_by") != POLICY:
                    continue
                if (await self.gov.trained(task, version)).role != trained.role:
                    continue
                if version == trained.parent_version:
                    outcome = "replaced"
                    reason = (
                        f"replaced by v{new}, the same {trained.role} ({trained.config}) after "
                        f"{trained.n_learned} more rows"
                    )
                else:
                    outcome = "superseded"
                    reason = (
                        f"superseded by entrant v{new} ({trained.config}), the race's runner-up now"
                        if trained.role == "entrant"
                        else f"superseded by challenger v{new} ({trained.config}), which "
                        "learned the rows after a later drift"
                    )
                if arm is state.canary:
                    decisions.append(_ended(task, version, outcome, reason, {}))
                    if (
                        outcome == "replaced"
                        and not state.killed
                        and await self._canary_gate(task, new, state) == []
                    ):
                        decisions.append(
                            CanaryStarted(
                                task=task,
                                model_version=new,
                                artifact_sha256=trained.artifact_sha256,
                                weight=arm.share,
                                reason=f"the canary's {trained.role} ({trained.config}) after "
                                f"{trained.n_learned} more rows answers in v{version}'s place",
                                decided_by=POLICY,
                                evidence={
                                    "replaces": version,
                                    "n_learned": trained.n_learned_total,
                                },
                                pipeline_version=trained.pipeline_version,
                            )
                        )
                else:
                    decisions.append(
                        ShadowStopped(
                            task=task,
                            model_version=version,
                            outcome=outcome,
                            reason=reason,
                            decided_by=POLICY,
                        )
                    )
            if decisions:
                await self.gov.decide_all(task, decisions, state, causation=envelope)
                log.info(
                    "governance.challengers_superseded",
                    task=task,
                    by=new,
                    outcomes=[getattr(d, "outcome", "canary") for d in decisions],
                )
        return any(isinstance(d, CanaryStarted) for d in decisions)

    async def on_arms(self, envelope: Envelope) -> None:
        """Judge the canary and the shadows on the trainer's newest counts."""
        scored = envelope.data()
        assert isinstance(scored, ArmsScored)
        task = scored.task
        spec = await self.gov.spec(task)
        policy = spec.promotion.canary
        async with self.gov.task_locks[task]:
            state = await self.gov.deployment_state(task)
            if state.answering() is None or state.killed:
                return  # the kill switch stopped every arm
            decisions: list[Payload] = []
            if scored.canary is not None and state.canary is not None:
                decisions += await self._judge_canary(task, scored, state, policy)
            for shadow in scored.shadows:
                version = int(shadow["model_version"])
                if version in state.shadows and not decisions:
                    decisions += await self._judge_shadow(task, version, shadow, state, policy)
            if decisions:
                await self.gov.decide_all(task, decisions, state, causation=envelope)
                for payload in decisions:
                    log.info(
                        "governance.routing_decided",
                        task=task,
                        type=payload.type_name,
                        version=getattr(payload, "model_version", None),
                    )

    async def on_served(self, envelope: Envelope) -> None:
        """Read the canary's guardrails on serving's newest reports, without waiting for labels:
        a canary that fails or slows its requests is rolled back."""
        served = envelope.data()
        assert isinstance(served, ArmsServed)
        task = served.task
        policy = (await self.gov.spec(task)).promotion.canary
        async with self.gov.task_locks[task]:
            state = await self.gov.deployment_state(task)
            if state.canary is None or state.killed or state.answering() is None:
                return
            version = state.canary.model_version
            champion, canary = await self._arms_served(task, state)
            evidence: dict[str, Any] = {}
            tripped = guardrails(
                _operations(Arm(0, 0), champion), _operations(Arm(0, 0), canary), policy, evidence
            )
            if not tripped:
                return
            evidence["verdict"] = Verdict.ROLL_BACK.value
            ended = _ended(task, version, "rolled_back", "; ".join(tripped), evidence)
            await self.gov.decide_all(task, [ended], state, causation=envelope)
            log.info("governance.canary_guardrail", task=task, version=version, reasons=tripped)

    async def _arms_served(self, task: str, state: DeploymentState) -> tuple[ArmHealth, ArmHealth]:
        """The champion's and the canary's requests as every replica reported them since the
        canary started (added up incrementally: only new reports are read)."""
        assert state.canary is not None
        version, since = state.canary.model_version, state.canary.since
        key = (task, version, since)
        if key not in self._served:
            started = await self._started(task, since)
            self._served[key] = ((started and started.position) or 0, ArmHealth(), ArmHealth())
        after, champion, canary = self._served[key]
        while reports := await self.gov.store.read_all(
            after, 1000, types=["ArmsServed"], streams=[governance_stream(task)]
        ):
            for report in reports:
                for arm in report.payload["arms"]:
                    if arm["role"] == "champion":
                        champion.add(ArmHealth.from_dict(arm))
                    elif arm["role"] == "canary" and arm["model_version"] == version:
                        canary.add(ArmHealth.from_dict(arm))
            after = reports[-1].position or after
        self._served[key] = (after, champion, canary)
        return champion, canary

    async def _judge_canary(
        self, task: str, scored: ArmsScored, state: DeploymentState, policy: Any
    ) -> list[Payload]:
        assert scored.canary is not None and state.canary is not None
        version = int(scored.canary["model_version"])
        if version != state.canary.model_version:
            return []
        mine, theirs = scored.canary["canary"], scored.canary["champion"]
        key = (task, "canary", version)
        started = await self._started_at(task, state.canary.since)
        champion_served, canary_served = await self._arms_served(task, state)
        paired = scored.canary.get("paired")
        regression = "abs_error" in mine  # answers are values: judged on the pairs only
        if paired and (
            regression
            or own_traffic_cannot_judge(theirs["n"], mine["n"], state.canary.share, policy)
        ):
            # The split departs from the canary's share (few entities, sticky by entity): judged
            # on its own rows against the champion as the trainer ran it on them. Its own p-value:
            # the two tests' running minimums are not mixed.
            key = (task, "canary-paired", version)
            analysis = shadow_analysis(
                Paired.from_counts(paired),
                policy,
                previous_p=self._p.get(key, 1.0),
                seconds=time.time() - started,
            )
            analysis.reasons.append(
                f"judged on the canary's own {paired['n']} labelled rows, paired with the "
                "champion's answers to them: "
                + (
                    "a regression's canary is judged on the paired difference of the two "
                    "absolute errors"
                    if regression
                    else f"the champion answered {theirs['n']} rows itself, too few beside "
                    f"the canary's at a {state.canary.share:g}% share"
                )
            )
        else:
            analysis = canary_analysis(
                _operations(
                    Arm(theirs["n"], theirs["correct"], theirs["log_loss"]), champion_served
                ),
                _operations(Arm(mine["n"], mine["correct"], mine["log_loss"]), canary_served),
                policy,
                previous_p=self._p.get(key, 1.0),
                seconds=time.time() - started,
            )
        self._p[key] = analysis.p_value
        if analysis.verdict is Verdict.CONTINUE:
            return []
        evidence = _evidence(analysis)
        reason = "; ".join(analysis.reasons)
        if analysis.verdict is Verdict.PROMOTE:
            trained = await self.gov.trained(task, version)
            gate = await self.gov.gate(await self.gov.model_spec(trained), trained, state)
            # The canary's live evidence replaces the offline metric check; the audit and any
            # approvals still decide.
            blocking = [r for r in gate.reasons if r.startswith(("bias audit", "rejected"))]
            if gate.verdict is GateVerdict.REFUSE and blocking:
                return [_ended(task, version, "stopped", "; ".join(blocking), evidence)]
            if gate.verdict is GateVerdict.AWAIT:
                return []  # better, but the policy wants people to approve it first
            return [
                ModelPromoted(
                    task=task,
                    model_version=version,
                    artifact_sha256=trained.artifact_sha256,
                    previous_version=state.champion,
                    reason=f"canary: {reason}",
                    decided_by=POLICY,
                    pipeline_version=trained.pipeline_version,
                ),
                _ended(task, version, "promoted", reason, evidence),
            ]
        outcome = "rolled_back" if analysis.verdict is Verdict.ROLL_BACK else "inconclusive"
        return [_ended(task, version, outcome, reason, evidence)]

    async def _judge_shadow(
        self,
        task: str,
        version: int,
        shadow: dict[str, Any],
        state: DeploymentState,
        policy: Any,
    ) -> list[Payload]:
        key = (task, "shadow", version)
        analysis = shadow_analysis(
            Paired.from_counts(shadow), policy, previous_p=self._p.get(key, 1.0)
        )
        self._p[key] = analysis.p_value
        if analysis.verdict is Verdict.CONTINUE:
            return []
        evidence = _evidence(analysis)
        reason = "; ".join(analysis.reasons)
        if analysis.verdict is Verdict.PROMOTE:
            if state.canary is not None:
                return []  # one canary at a time: this one waits its turn
            blocking = await self._canary_gate(task, version, state)
            if blocking is None:
                return []  # its audit still waits for labelled rows it never learned
            if blocking:
                return [
                    ShadowStopped(
                        task=task,
                        model_version=version,
                        outcome="refused",
                        reason="; ".join([reason, *blocking]),
                        decided_by=POLICY,
                        evidence=evidence,
                    )
                ]
            arm = state.shadows[version]
            return [
                ShadowStopped(
                    task=task,
                    model_version=version,
                    outcome="canary",
                    reason=reason,
                    decided_by=POLICY,
                    evidence=evidence,
                ),
                CanaryStarted(
                    task=task,
                    model_version=version,
                    artifact_sha256=arm.artifact_sha256,
                    weight=policy.weight,
                    reason=f"as a shadow, {reason}",
                    decided_by=POLICY,
                    evidence=evidence,
                    pipeline_version=state.pipelines.get(version),
                ),
            ]
        outcome = "lost" if analysis.verdict is Verdict.ROLL_BACK else "inconclusive"
        return [
            ShadowStopped(
                task=task,
                model_version=version,
                outcome=outcome,
                reason=reason,
                decided_by=POLICY,
                evidence=evidence,
            )
        ]

    async def _canary_gate(
        self, task: str, version: int, state: DeploymentState
    ) -> list[str] | None:
        """What stops a shadow that won from answering users as the canary (empty: nothing),
        or None while its bias audit cannot run yet. The audit runs here if it has not."""
        spec = await self.gov.spec(task)
        if spec.sensitive and await self.gov.candidate_audit(task, version) is None:
            trained = await self.gov.model_event(task, version)
            if await self.gov.audit_candidate(trained, spec) is None:
                return None
        try:
            await self._routable(task, version, state, "canary")
        except Conflict as exc:
            return list(exc.reasons)
        return []

    async def _started(self, task: str, since: int) -> Envelope | None:
        """The decision that started an arm (by its deployment stream version)."""
        found = await self.gov.store.read_stream(
            deployment_stream(task), after_version=since - 1, limit=1
        )
        return found[0] if found else None

    async def _started_at(self, task: str, since: int) -> float:
        started = await self._started(task, since)
        return started.occurred_at.timestamp() if started else time.time()


def _operations(arm: Arm, served: ArmHealth) -> Arm:
    """An arm's labelled outcomes with what serving reported of its requests."""
    return replace(
        arm, requests=served.requests, errors=served.errors, p99_ms=served.quantile_ms(0.99)
    )


def _running_canary(task: str, state: DeploymentState) -> int:
    if state.canary is None:
        raise Conflict([f"task {task!r} has no canary"])
    return state.canary.model_version


def _ended(
    task: str, version: int, outcome: str, reason: str, evidence: dict[str, Any]
) -> CanaryEnded:
    return CanaryEnded(
        task=task,
        model_version=version,
        outcome=outcome,
        reason=reason,
        decided_by=POLICY,
        evidence=evidence,
    )


def _evidence(analysis: Analysis) -> dict[str, Any]:
    return {**analysis.evidence, "verdict": analysis.verdict.value}


def _decision(event: Envelope) -> dict[str, Any]:
    return {
        "type": event.type,
        "stream_version": event.stream_version,
        "position": event.position,
        **event.payload,
    }
