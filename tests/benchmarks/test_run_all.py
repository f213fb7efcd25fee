"""run_all reads the figures a benchmark printed: its last JSON object, after any progress."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

RUN_ALL = Path(__file__).resolve().parents[2] / "benchmarks" / "run_all.py"


def _run_all():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("run_all", RUN_ALL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module
    spec.loader.exec_module(module)
    return module


def test_the_last_object_wins_over_progress_lines_and_nested_ones() -> None:
    out = (
        'Loading {weights}\n{"round": 0, "rate": {"a": 1}}\n{"round": 1}\n'
        '{\n  "benchmark": "x",\n  "inner": {"rate": 0.5},\n  "rounds": [{"a": 2}]\n}\n'
    )
    assert _run_all().last_json_object(out) == {
        "benchmark": "x", "inner": {"rate": 0.5}, "rounds": [{"a": 2}]
    }  # fmt: skip


def test_output_without_an_object_is_an_error() -> None:
    with pytest.raises(SystemExit, match="no JSON object"):
        _run_all().last_json_object("Traceback ... [1, 2]")
