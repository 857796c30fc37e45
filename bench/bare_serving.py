"""The baseline for bench/serving.py: a bare FastAPI app that loads one LightGBM booster and answers
the same single-record predict request as Continuo's serving (same path, same body), nothing else.

    MODEL=path/to/model.txt FEATURES=x1,x2,x3,x4 PORT=8099 python bench/bare_serving.py
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import lightgbm as lgb
import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: dict[str, float]
    entity_id: str | None = None


def create_app(model_file: str, features: list[str]) -> FastAPI:
    booster = lgb.Booster(model_file=model_file)
    app = FastAPI()

    @app.post("/v1/tasks/{task}/predict")
    async def predict(task: str, body: PredictRequest) -> dict[str, Any]:
        try:
            x = np.array([[body.features[f] for f in features]], dtype=float)
        except KeyError as exc:
            raise HTTPException(422, f"missing feature {exc}") from None
        p = float(booster.predict(x, num_threads=1)[0])
        return {
            "task": task,
            "predictions": [
                {"prediction_id": str(uuid.uuid4()), "probability": p, "label": int(p >= 0.5)}
            ],
        }

    return app


if __name__ == "__main__":
    app = create_app(os.environ["MODEL"], os.environ["FEATURES"].split(","))
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
