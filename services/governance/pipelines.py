"""Pipeline versions of a task: register a new version of its spec, start it, and say which runs.

A pipeline version is a version of the task's spec (features, online features, learner settings,
policy), named by its content hash. Registering one records it (`TaskRegistered`) and changes
nothing that runs. Starting one is a decision (`PipelineStarted` in the deployment stream, with
who and why): the trainer records it in the data stream (`PipelineChosen`), replays the stored
rows after the chosen `from_version` into the new pipeline's learner (it catches up), then trains
it on every row and publishes its models; serving goes on answering with the champion until one
of them is promoted. Promoting or rolling back to a model of another pipeline switches the
trainer to that pipeline the same way: rolling a pipeline back or forward is one decision, with
no service restarted (docs/pipelines.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from services.governance.auth import Role
from services.governance.errors import Conflict, Forbidden, Invalid, NotFound
from shared.deployments import DeploymentState
from shared.events.types import PipelineStarted, data_stream
from shared.registry import register_tasks, spec_versions
from shared.tasks import TaskSpec

if TYPE_CHECKING:
    from services.governance.auth import Principal
    from services.governance.service import Governance


class PipelineDecisions:
    """Registering and starting pipeline versions of every task."""

    def __init__(self, gov: Governance) -> None:
        self.gov = gov

    async def first(self, task: str) -> str | None:
        """The task's first registered version: the one its training starts with."""
        return next(iter(await spec_versions(self.gov.store, task)), None)

    async def decided(self, task: str, state: DeploymentState) -> str:
        """The pipeline the decisions say the task runs (its first, until one names another)."""
        return state.pipeline or await self.first(task) or ""

    async def running(self, task: str) -> str | None:
        """The pipeline version the trainer trains, as the data stream says (its last
        PipelineChosen, else the task's first registered version)."""
        store = self.gov.store
        chosen = await store.read_all(
            streams=[data_stream(task)], types=["PipelineChosen"], descending=True, limit=1
        )
        if chosen:
            return str(chosen[0].payload["pipeline_version"])
        return await self.first(task)

    async def register(
        self, task: str, document: Any, who: Principal, reason: str
    ) -> dict[str, Any]:
        """Record a new version of a task's spec; it runs only once started. Refused (422):
        a spec that is not valid, names another task, changes the target, or reads a feature
        the task's observations do not carry (with the type they have)."""
        current = await self.gov.spec(task)  # 404 for an unknown task
        try:
            spec = TaskSpec.model_validate(document)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            raise Invalid(f"spec: {where}: {first['msg']}") from None
        if spec.name != task:
            raise Invalid(f"spec: name {spec.name!r} is not the task {task!r}")
        if spec.target != current.target:
            raise Invalid("spec: the target must stay as it is (labels are shared by versions)")
        versions = await spec_versions(self.gov.store, task)
        # What observations carry: the features of the versions registered (ingest validates
        # rows against the one in its tasks/ directory).
        carried = {f.name: f for v in versions.values() for f in v.input_features}
        for feature in spec.input_features:
            known = carried.get(feature.name)
            if known is None or known.type != feature.type:
                raise Invalid(
                    f"spec: feature {feature.name!r} ({feature.type}) is not one the task's "
                    f"observations carry (they carry: {', '.join(sorted(carried))})"
                )
        governed = [
            name
            for name in ("promotion", "sensitive", "sensitive_as_features", "serving")
            if getattr(spec, name) != getattr(current, name)
        ]
        if governed and who.role is not Role.ADMIN:
            # The policy judges every model of the version: changing it is not an operator's
            # call (a looser gate would let its models skip approvals or audits).
            raise Forbidden(
                f"a version that changes {', '.join(governed)} needs the admin role; key "
                f"{who.key_id} ({who.name}) has the {who.role.value} role"
            )
        new = spec.version not in versions
        if new:
            await register_tasks(
                self.gov.store, [spec], self.gov.runtime.producer, by=who.name, reason=reason
            )
        return {
            "task": task,
            "pipeline_version": spec.version,
            "registered": new,
            "registered_by": who.name,
            "input_names": list(spec.input_names),
        }

    async def start(
        self, task: str, version: str, from_version: int, who: Principal, reason: str
    ) -> dict[str, Any]:
        """Decide that the trainer runs pipeline `version`, caught up on the data stream after
        `from_version`. 404: not a registered version; 409: it already runs; 422: the stream
        has no such version yet."""
        await self.gov.spec(task)
        versions = await spec_versions(self.gov.store, task)
        if version not in versions:
            raise NotFound(f"task {task!r} has no pipeline version {version!r}")
        head = await self.gov.store.read_all(streams=[data_stream(task)], descending=True, limit=1)
        last = head[0].stream_version or 0 if head else 0
        if from_version > last:
            raise Invalid(f"from_version {from_version}: the task's data stream has {last} events")
        async with self.gov.task_locks[task]:
            state = await self.gov.deployment_state(task)
            decided = await self.decided(task, state)
            if version == decided:
                raise Conflict([f"pipeline {version[:12]} is the one the task runs"])
            decision = PipelineStarted(
                task=task,
                pipeline_version=version,
                previous_version=decided,
                from_version=from_version,
                reason=reason,
                decided_by=who.name,
            )
            # decide_all also stops the arms of other pipelines (the trainer scores only its
            # own pipeline's: they would never end).
            [event, *stopped] = await self.gov.decide_all(task, [decision], state)
        return {
            "type": event.type,
            "stream_version": event.stream_version,
            "position": event.position,
            **event.payload,
            "arms_stopped": len(stopped),
        }

    async def listing(self, task: str) -> dict[str, Any]:
        """Every registered version, which one the trainer runs and the champion's."""
        await self.gov.spec(task)
        state = await self.gov.deployment_state(task)
        answering = state.answering()
        champion = (
            await self.gov.pipeline_of(task, answering[0], state) if answering is not None else None
        )
        started = state.pipeline_started
        return {
            "task": task,
            "running": await self.running(task),
            "decided": await self.decided(task, state),
            "champion": champion,
            "last_started": None
            if started is None
            else {
                "stream_version": started[0],
                "pipeline_version": started[1],
                "from_version": started[2],
            },
            "versions": [
                {
                    "pipeline_version": version,
                    "input_names": list(spec.input_names),
                    "learner": spec.learner.model_dump(mode="json"),
                    "promotion": spec.promotion.model_dump(mode="json"),
                }
                for version, spec in (await spec_versions(self.gov.store, task)).items()
            ],
        }
