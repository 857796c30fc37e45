"""Serving's request and response bodies (the API's contract, in its OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.examples import COMPAS_FEATURES, ELEC_FEATURES
from shared.http import MAX_POSITION
from shared.tasks import MAX_ENTITY_ID, StorableStr, storable


class PredictRecord(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"features": ELEC_FEATURES, "entity_id": "nsw"}]},
    )

    features: dict[str, Any] = Field(
        description="every feature of the task and every sensitive attribute, by name "
        "(GET /v1/tasks/{task} on ingest lists them): `float` and `int` as numbers, `bool` as "
        "true/false, `category` as one of its categories. A task's sensitive attributes "
        "(COMPAS: `race`, `sex`) are required although its model does not use them (unless the "
        "spec says `sensitive_as_features`): each row and prediction keeps them, and the bias "
        "audits, on recorded rows and on served predictions, group by them"
    )
    entity_id: StorableStr | None = Field(
        None,
        min_length=1,
        max_length=MAX_ENTITY_ID,
        description="whose row this is: required by tasks with per-entity online features and "
        "when the row is recorded",
    )


class PredictRequest(BaseModel):
    """One record (`features`, optional `entity_id`) or a batch (`records`). Strict: `"yes"` is
    not `true`, nor `"5"` a position."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"features": ELEC_FEATURES, "entity_id": "nsw"},
                {
                    "records": [{"features": ELEC_FEATURES, "entity_id": "nsw"}],
                    "record": True,
                    "after_position": 1234,
                },
                {"features": COMPAS_FEATURES, "entity_id": "defendant-1", "record": True},
            ]
        },
    )

    features: dict[str, Any] | None = None
    entity_id: StorableStr | None = Field(None, min_length=1, max_length=MAX_ENTITY_ID)
    records: list[PredictRecord] | None = Field(None, min_length=1)
    record: bool | None = Field(
        None,
        description="log and wait: record each row as an observation (its features, the "
        "online-feature values used, the answer); its label can then be posted to ingest by "
        "`prediction_id`. Default: the task's `serving.record`.",
    )
    after_position: int | None = Field(
        None,
        ge=0,
        le=MAX_POSITION,
        description="read your writes: the online features include every event stored at or "
        "before this position (e.g. the last position ingest returned for your labels)",
    )

    @model_validator(mode="after")
    def _one_or_many(self) -> PredictRequest:
        if (self.features is None) == (self.records is None):
            raise ValueError("give either `features` (one record) or `records` (a batch)")
        if self.records is not None and self.entity_id is not None:
            raise ValueError("`entity_id` goes inside each of `records`")
        return self

    def as_records(self) -> list[PredictRecord]:
        if self.records is not None:
            return self.records
        assert self.features is not None
        return [PredictRecord(features=self.features, entity_id=self.entity_id)]


class PredictionOut(BaseModel):
    prediction_id: str
    model_version: int | None = Field(None, description="the model that answered this row")
    role: str = Field("champion", description="champion, or canary for the canary's entities")
    label: Any = Field(
        description="the predicted class (a regression: the predicted value); null before the "
        "task's first model"
    )
    probability: float | None = Field(
        description="P(the task's second class); null for a regression or a multiclass task, and "
        "before the task's "
        "first model (a row recorded then is learned all the same)"
    )
    value: float | None = Field(
        None, description="a regression task's predicted value; null for a classifier"
    )
    interval: tuple[float, float] | None = Field(
        None,
        description="a regression's 90% prediction interval [low, high]: the value plus or "
        "minus the absolute error that 90% of the model's last 500 answers did not exceed "
        "(split conformal); null for a classifier, and while the model has fewer than 20",
    )
    probabilities: dict[str, float] | None = Field(
        None,
        description="a multiclass task's P(each class), by class (as a string); `label` is the "
        "most probable; null for a binary task (its `probability`) and a regression",
    )
    online_features: dict[str, float] = Field(
        default_factory=dict, description="the online-feature values the model was given"
    )


class PredictResponse(BaseModel):
    task: str
    model_version: int | None = Field(
        description="the model that answered; null when the task has no model yet and the rows "
        "were only recorded (log and wait)"
    )
    recorded: bool = Field(
        description="whether the rows were recorded as observations (label them by prediction_id)"
    )
    predictions: list[PredictionOut]


class ModelOut(BaseModel):
    task: str
    model_version: int
    artifact_sha256: str


class ArmOut(BaseModel):
    model_version: int
    artifact_sha256: str
    share: float = Field(description="canary: percent of entities; shadow: share of requests")


class RoutingOut(BaseModel):
    """Who answers a task's requests, as one replica applies it."""

    task: str
    stream_version: int = Field(description="the deployment stream version applied")
    champion: ArmOut | None
    canary: ArmOut | None
    shadows: list[ArmOut]
    flags: dict[str, dict[str, Any]]
    killed: bool

    @classmethod
    def of(cls, routes: Any) -> RoutingOut:
        def arm(served: Any) -> ArmOut | None:
            if served is None:
                return None
            return ArmOut(
                model_version=served.model_version,
                artifact_sha256=served.artifact_sha256,
                share=served.share,
            )

        return cls(
            task=routes.task,
            stream_version=routes.stream_version,
            champion=arm(routes.champion),
            canary=arm(routes.canary),
            shadows=[a for a in (arm(s) for s in routes.shadows) if a is not None],
            flags={k: f.model_dump() for k, f in routes.flags.items()},
            killed=routes.killed,
        )


class OfrepRequest(BaseModel):
    """An OpenFeature remote evaluation request: the evaluation context."""

    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("context")
    @classmethod
    def _targeting_key_is_an_entity_id(cls, context: dict[str, Any]) -> dict[str, Any]:
        key = context.get("targetingKey")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_ENTITY_ID):
            raise ValueError(
                f"targetingKey (the entity id) must be text of 1 to {MAX_ENTITY_ID} characters"
            )
        if key is not None:
            storable(key, "targetingKey")  # as an entity id: no NUL, no lone surrogate
        return context

    def targeting_key(self) -> str | None:
        key = self.context.get("targetingKey")
        return None if key is None else str(key)


class FlagEvaluation(BaseModel):
    key: str
    value: bool | float | str
    reason: str
    variant: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class FlagsEvaluation(BaseModel):
    flags: list[FlagEvaluation]


class OfrepError(BaseModel):
    """OFREP's answer to an evaluation request it cannot evaluate (400): `errorCode` PARSE_ERROR
    (the body is not JSON) or INVALID_CONTEXT (the context, such as a `targetingKey` that is not
    an entity id), and what was wrong; `key` on single-flag evaluations."""

    key: str | None = None
    errorCode: Literal["PARSE_ERROR", "INVALID_CONTEXT"]  # noqa: N815 - OFREP's field name
    errorDetails: str  # noqa: N815


class FlagNotFound(BaseModel):
    """OFREP's answer for a flag that does not exist (404); an unknown task is a `Problem`."""

    model_config = ConfigDict(extra="allow")

    key: str | None = None
    errorCode: str | None = None  # noqa: N815 - OFREP's field name
    errorDetails: str | None = None  # noqa: N815
    detail: str | None = None
