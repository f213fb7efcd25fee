"""The recipe benchmark's own helpers: merging mass reads, and the trimmed tokenizer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from stillroom.trace.mass import Weights, combine, weights_from_rows

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _weights(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unsorted, repeating (context, token) rows with probabilities, and the contexts read."""
    rows = rng.integers(0, 50, size=(n, 2))
    return rows, rng.random(n), rng.integers(0, 50, size=(n // 3, 1))


def _as_weights(rows: np.ndarray, prob: np.ndarray, read: np.ndarray) -> Weights:
    return weights_from_rows(rows, prob, read)


def test_merged_reads_are_one_read_of_all_the_texts() -> None:
    trace_recipes = _load("trace_recipes")
    rng = np.random.default_rng(0)
    a, b = _weights(rng, 300), _weights(rng, 200)
    merged = trace_recipes.merge(_as_weights(*a), _as_weights(*b))
    whole = _as_weights(*(np.concatenate([x, y]) for x, y in zip(a, b, strict=True)))
    np.testing.assert_array_equal(merged.rows, whole.rows)
    np.testing.assert_allclose(merged.prob, whole.prob)
    np.testing.assert_array_equal(merged.contexts, whole.contexts)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    rows_m, c_m = combine(merged, None)
    rows_w, c_w = combine(whole, None)
    np.testing.assert_array_equal(rows_m, rows_w)
    np.testing.assert_allclose(c_m, c_w)
    assert trace_recipes.merge(None, whole) is whole


def test_slices_cover_the_texts_once() -> None:
    trace_recipes = _load("trace_recipes")
    assert trace_recipes.slices([50, 100, 200]) == [(0, 50), (50, 100), (100, 200)]


@pytest.mark.slow
def test_trimmed_tokenizer_encodes_the_harvest_as_the_teacher_does() -> None:
    from stillroom.runtime.loading import load_tokenizer
    from stillroom.trace.reading import vocab_map

    recipes = _load("recipe_students")
    teacher = load_tokenizer()
    rows = [
        {"prompt": "What is a lighthouse?", "answer": "A tall tower with a light. Café, naïve."},
        {"prompt": "Describe rain in one sentence.", "answer": "Water falls\n\nfrom clouds 🙂."},
    ]
    trimmed, old = recipes.trim_tokenizer(teacher, rows)
    assert len(old) < len(teacher) // 4
    for row in rows:
        ours, start = recipes.encode(trimmed, row["prompt"], row["answer"], True)
        theirs, their_start = recipes.encode(teacher, row["prompt"], row["answer"], True)
        assert [old[i] for i in ours] == theirs and start == their_start
    unseen = "Zebras graze on the savanna at dawn."
    ids = trimmed(unseen, add_special_tokens=False)["input_ids"]
    assert trimmed.decode(ids) == unseen  # other text falls into smaller kept pieces
    to_teacher = vocab_map(trimmed, teacher)
    assert (to_teacher[ids] >= 0).all()  # and every piece maps to a teacher token by string


def test_served_null_takes_runs_of_the_controls_only() -> None:
    served = _load("recipe_served")
    rng = np.random.default_rng(1)
    students = {
        "a-marked": {"marked": True, "served": {"d": list(rng.normal(1, 1, 250))}},
        "a-control": {"marked": False, "served": {"d": list(rng.normal(0, 1, 250))}},
        "b-control": {"marked": False, "served": {"curve": []}},  # cached before D was kept
    }
    p = served.served_null(students, "served")
    assert len(p) == 25 and all(0 < x <= 1 for x in p)
    assert served.served_null(students, "api_served") == []
    # A student that won every pair: the sign test's exact tail, 2^-n.
    won = served.curve(np.ones(20), [10, 20])
    assert [c["n"] for c in won] == [10, 20]
    assert won[1]["p"] == pytest.approx(2.0**-20)


def test_a_mixed_student_is_named_by_its_watermarked_share() -> None:
    recipes = _load("recipe_students")
    names = [p.name for p in recipes.plans(250, 4, ["trimmed"], "both", 0.1)]
    assert names == ["trimmed-250x4-mix10", "trimmed-250x4-control"]
    assert recipes.plans(250, 4, ["frozen"], "marked")[0].name == "frozen-250x4-marked"
