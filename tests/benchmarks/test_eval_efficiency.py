"""The eval-efficiency benchmark's own helpers: its items, its summary, its memory sums."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from transformers import AutoConfig, AutoTokenizer

from tests.helpers.tiny_models import make_sharp_tiny_lm

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load("eval_efficiency")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sharp_tiny_lm(tmp_path_factory.mktemp("bench") / "lm")


def test_items_are_fixed_and_of_varied_length(bench: ModuleType) -> None:
    texts = bench.items()
    assert texts == bench.items() and len(texts) == 96
    assert len({t.count(" ") for t in texts}) == 7  # 1 to 7 words before the prompt


def test_activation_estimate_follows_the_models_shape(bench: ModuleType, model: Path) -> None:
    texts = bench.items()
    cfg = AutoConfig.from_pretrained(model)
    tok = AutoTokenizer.from_pretrained(model)
    longest = max(len(tok(t)["input_ids"]) for t in texts)
    per_item = 3 * longest * cfg.intermediate_size + cfg.num_attention_heads * longest**2
    assert bench.activations_mb(model, texts) == pytest.approx(4 * 16 * per_item / 1e6)
    assert bench.activations_mb(model, texts[:1]) < bench.activations_mb(model, texts)


def test_summary_measures_each_method_against_a_ratio_of_one(
    bench: ModuleType, model: Path
) -> None:
    def copy(rate: float, peak: float) -> dict[str, Any]:
        return {"throughput_items_per_s": rate, "throughput_min": rate * 0.9,
                "throughput_max": rate * 1.1, "peak_rss_mb": peak, "held_rss_mb": peak,
                "weights_mb": 0.4}  # fmt: skip

    runs = {
        "old": [{"a": copy(100, 0.1), "b": copy(40, 0.0)}],  # one copy timed in a quiet spell
        "new": [{"a": copy(95, 5.0), "b": copy(100, 5.0)}],
    }
    out = bench.summarise(runs, model, bench.items())
    ratios = out["throughput_ratio_identical_models"]
    assert ratios["baseline_old_sequential_measure"]["worst_off_by"] == 1.5
    assert ratios["new_interleaved_rounds"]["worst_off_by"] == 0.05
    memory = out["peak_memory_mb"]
    held = memory["held_mb_estimate"]  # the parts are rounded; this is their unrounded sum
    assert held == pytest.approx(
        memory["weights_mb"] + memory["tokenizer_mb"] + memory["activations_mb_estimate"], abs=0.2
    )
    assert memory["new_worst_off_weights_tokenizer_activations"] == pytest.approx(
        abs(5.0 / held - 1), abs=0.01
    )
    assert out["passed"] == (memory["new_worst_off_weights_tokenizer_activations"] <= 0.2)
