"""One booster's raw score for one row at a time, through LightGBM's fast single-row C API.

`Booster.predict` spends about 85 us of Python-side set-up on every call (a predictor object, a
parameter string, the input checked and copied), which is all of its cost for the one-record
requests serving answers. LightGBM's C API has a path made for that case: a prediction
configuration prepared once (`LGBM_BoosterPredictForMatSingleRowFastInit`), then one call per row
(`LGBM_BoosterPredictForMatSingleRowFast`), about 2 us here for a 60-tree model. The trees and the
sums are the same, so the scores equal `predict(raw_score=True)`'s (tested exactly).

The C API is reached through `lightgbm.basic`'s library handle, which is not public; if it is not
there (another LightGBM), `raw_scorer` returns None and callers use `Booster.predict`. A scorer is
not thread-safe (the configuration holds one row's buffers); the models that use it learn in
place and are not either.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import Any

import lightgbm as lgb
import numpy as np
import structlog

log = structlog.get_logger(__name__)

try:  # the library handle and constants of the installed LightGBM
    from lightgbm.basic import _C_API_DTYPE_FLOAT64, _C_API_PREDICT_RAW_SCORE, _LIB

    _INIT = _LIB.LGBM_BoosterPredictForMatSingleRowFastInit
    _PREDICT = _LIB.LGBM_BoosterPredictForMatSingleRowFast
    _FREE = _LIB.LGBM_FastConfigFree
except (ImportError, AttributeError):  # pragma: no cover - depends on the LightGBM installed
    _INIT = _PREDICT = _FREE = None  # type: ignore[assignment]


class _Failed(RuntimeError):
    pass


def _check(ret: int) -> None:
    if ret != 0:
        raise _Failed(_LIB.LGBM_GetLastError().decode("utf-8", "replace"))


class RawScorer:
    """`raw(row)`: the booster's raw score (log-odds) of one row of `n_features` floats."""

    def __init__(self, booster: lgb.Booster, n_features: int) -> None:
        self._booster = booster  # the configuration points into it: keep it alive
        config = ctypes.c_void_p()
        _check(
            _INIT(
                booster._handle,
                ctypes.c_int(_C_API_PREDICT_RAW_SCORE),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # every iteration
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(config),
            )
        )
        self._config = config
        weakref.finalize(self, _FREE, config)
        self._row = np.zeros(n_features, dtype=np.float64)
        self._out = np.zeros(1, dtype=np.float64)
        self._length = ctypes.c_int64()
        self._args = (
            config,
            self._row.ctypes.data_as(ctypes.c_void_p),
            ctypes.byref(self._length),
            self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        )

    def raw(self, row: Any) -> float:
        self._row[:] = row
        _check(_PREDICT(*self._args))
        return float(self._out[0])


def raw_scorer(booster: lgb.Booster, n_features: int) -> RawScorer | None:
    """A fast single-row scorer for the booster, or None where the C API path is unavailable."""
    if _INIT is None:
        return None
    try:
        return RawScorer(booster, n_features)
    except _Failed as exc:  # pragma: no cover - an unusual booster: the slow path still works
        log.warning("tree_rows.fast_path_unavailable", error=str(exc))
        return None
