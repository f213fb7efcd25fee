"""The vLLM harvest benchmark's own helpers: how two harvests' top-k are compared, and how
the figures are summed against their floors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vllm_harvest", BENCHMARKS / "vllm_harvest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vllm_harvest"] = module
    spec.loader.exec_module(module)
    return module


def _answer(
    ids: list[int], tops: list[list[int]], lps: list[list[float]]
) -> tuple[list[int], np.ndarray, np.ndarray]:
    return ids, np.asarray(tops, np.int64), np.asarray(lps, np.float32)


def test_agreement_reads_the_shared_context_only(bench: ModuleType) -> None:
    # Answers part after their second token: positions 0, 1 (shared context) and 2 (the
    # first that differs, its context still shared) are compared; position 3 is not.
    a = _answer([5, 6, 7, 8], [[5, 1], [6, 2], [7, 3], [8, 4]], [[-0.1, -2], [-0.2, -3]] * 2)
    b = _answer([5, 6, 9, 8], [[5, 1], [6, 9], [9, 7], [1, 2]], [[-0.3, -2], [-0.2, -1]] * 2)
    got = bench.topk_agreement({"p": a}, {"p": b}, k=2)
    assert got["answers_identical"] == 0
    assert got["positions_compared"] == 3
    assert got["top1_agree"] == round(2 / 3, 4)  # position 2: 7 against 9
    assert got["topk_id_overlap_mean"] == round((1 + 0.5 + 0.5) / 3, 4)
    # Shared ids: 5 and 1 at position 0, 6 at 1, and 7 at 2 (-0.1 in a, -2 in b).
    assert got["logprob_abs_gap_mean"] == pytest.approx((0.2 + 0 + 0 + 1.9) / 4, abs=1e-4)


def test_agreement_counts_identical_answers_and_skips_absent_entries(bench: ModuleType) -> None:
    same = _answer([3, 4], [[3, -1], [4, 2]], [[0.0, -np.inf], [-0.5, -1.0]])
    other = _answer([1], [[1, 3]], [[-0.1, -2.5]])
    got = bench.topk_agreement({"p": same, "q": other}, {"p": same, "r": other}, k=2)
    assert got["answers_compared"] == 1 and got["answers_identical"] == 1
    # The absent entry (-1) is no id: position 0 has one entry on each side, both alike.
    assert got["topk_id_overlap_mean"] == 1.0 and got["logprob_abs_gap_mean"] == 0.0


def test_kd_summary_sets_the_gap_beside_the_seed_spread(bench: ModuleType) -> None:
    runs = {
        "vllm": [{"val_kl": 2.0}, {"val_kl": 2.3}, {"val_kl": 2.15}],
        "local": [{"val_kl": 2.1}, {"val_kl": 2.15}, {"val_kl": 2.2}],
    }
    got = bench.kd_summary(runs)
    assert got["gap"] == pytest.approx(0.0) and got["seed_to_seed_spread"] == 0.3
    assert got["vllm_minus_local_per_seed"] == [-0.1, 0.15, -0.05]
    assert got["passed"]
    runs["vllm"] = [{"val_kl": 3.0}, {"val_kl": 3.1}, {"val_kl": 3.05}]
    got = bench.kd_summary(runs)
    assert got["gap"] == pytest.approx(0.9) and got["seed_to_seed_spread"] == 0.1
    assert not got["passed"]


def test_throughput_summary_divides_totals_not_round_rates(bench: ModuleType) -> None:
    arms = {
        "bare_openai_loop": [
            {"seconds": 10.0, "tokens": 1000, "order": 0},
            {"seconds": 30.0, "tokens": 1000, "order": 1},
        ],
        "stillroom_harvest": [
            {"seconds": 20.0, "tokens": 1000, "order": 1},
            {"seconds": 20.0, "tokens": 1000, "order": 0},
        ],
    }
    got = bench.throughput_summary(arms, requests=10)
    # 2000 tokens in 40 s each: equal overall, though the rounds' own ratios are 0.5 and 1.5.
    assert got["bare_openai_loop"]["tokens_per_s"] == 50.0
    assert got["stillroom_harvest"]["requests_per_s"] == 0.5
    assert got["ratio_tokens_per_s"] == 1.0 and got["ratio_per_round"] == [0.5, 1.5]
    assert got["passed"]
    assert [r["went"] for r in got["stillroom_harvest"]["per_round"]] == ["second", "first"]
