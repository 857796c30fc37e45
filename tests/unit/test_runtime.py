"""A service process tunes the cyclic garbage collector from its settings."""

from __future__ import annotations

import gc

import pytest

from shared.runtime import tune_collector
from shared.settings import CommonSettings


@pytest.fixture
def thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_young_generation_threshold_comes_from_the_settings(thresholds, monkeypatch):
    _, older, oldest = gc.get_threshold()
    tune_collector(CommonSettings())
    assert gc.get_threshold() == (20_000, older, oldest)  # the default, not CPython's 700
    monkeypatch.setenv("CONTINUO_GC_THRESHOLD", "5000")
    tune_collector(CommonSettings())
    assert gc.get_threshold() == (5000, older, oldest)


def test_a_threshold_below_one_is_refused(monkeypatch):
    monkeypatch.setenv("CONTINUO_GC_THRESHOLD", "0")  # 0 would turn collection off
    with pytest.raises(ValueError, match="CONTINUO_GC_THRESHOLD"):
        CommonSettings()
