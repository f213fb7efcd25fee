"""The output-match test on tiny real models: a student distilled from one of three
candidates is matched to it; a model unrelated to all of them gets no parent."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stillroom.student_config import StudentConfig
from stillroom.teachers.base import GenerationParams, TeacherRequest
from stillroom.teachers.local import LocalTeacher
from stillroom.trace.match import (
    compare,
    holm,
    match_rates,
    output_match_test,
    random_prompts,
    sign_test,
    statement,
)
from stillroom.trace.suspects import LocalSuspect
from stillroom.train.students import build_student, save_student
from tests.helpers.tiny_models import SENTENCES, fit_on_answers, make_tiny_lm

WORDS = sorted({w for s in SENTENCES for w in s.split()})


def word_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]


def greedy_ids(folder: Path, prompts: list[str]) -> list[list[int]]:
    """The answers' token ids, as our harvest of a local teacher stores them."""
    teacher = LocalTeacher.load(str(folder), batch_size=64)
    params = GenerationParams(max_tokens=16, temperature=0.0)
    done = teacher.generate([TeacherRequest(None, (("user", p),), params) for p in prompts])
    return [list(c.choices[0].token_ids or []) for c in done]


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three candidates and three references (tiny random LMs, one seed each), a student
    shrunk from candidate "b" (the project's student init) and taught on b's greedy answers,
    and an independent model."""
    root = tmp_path_factory.mktemp("match")
    seeds = {"a": 1, "b": 2, "c": 3, "r1": 4, "r2": 5, "r3": 6, "independent": 9}
    models = {name: make_tiny_lm(root / name, seed=s) for name, s in seeds.items()}
    teach = word_prompts(1024, seed=1)
    answers = greedy_ids(models["b"], teach)
    student = build_student(StudentConfig(init="shrink", trim_vocab=False), models["b"])
    save_student(student, root / "student")
    models["student"] = fit_on_answers(root / "student", teach, answers, steps=60, lr=1e-3)
    return models


def test_match_rates_count_the_suspects_positions() -> None:
    rates = match_rates([[1, 2, 3, 4], [5], []], [[1, 2, 9], [5, 6], []])
    assert rates.tolist() == [0.5, 1.0, 1.0]


def test_sign_test_and_holm() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(10, 0) == pytest.approx(0.5**10)
    assert sign_test(5, 5) > 0.5
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def test_p_values_are_valid_when_the_candidate_is_no_closer() -> None:
    # Candidate and reference drawn alike: the test must reject in about alpha of runs.
    rng = np.random.default_rng(0)
    rejected = []
    for _ in range(400):
        suspect = rng.integers(0, 4, size=(60, 8)).tolist()
        cand = rng.integers(0, 4, size=(60, 8)).tolist()
        ref = rng.integers(0, 4, size=(60, 8)).tolist()
        r = compare(suspect, {"c": cand}, {"r": ref}, alpha=0.05)
        rejected.append(r.parent is not None)
    assert np.mean(rejected) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 400)


def test_random_prompts_never_repeat_a_prompt() -> None:
    assert sorted(random_prompts(["x", "y", "z", "y"], 5, seed=0)) == ["x", "y", "z"]
    assert len(set(random_prompts([str(i) for i in range(100)], 10, seed=1))) == 10


class Remembering(LocalSuspect):
    """A model folder whose greedy answers are kept: both tests ask the same candidates."""

    def __init__(self, folder: str) -> None:
        super().__init__(folder)
        self.seen: dict[tuple[str, ...], list[str]] = {}

    def answer(self, prompts: list[str], **kw: Any) -> list[str]:
        if tuple(prompts) not in self.seen:
            self.seen[tuple(prompts)] = super().answer(prompts, **kw)
        return self.seen[tuple(prompts)]


@pytest.fixture(scope="module")
def loaded(family: dict[str, Path]) -> dict[str, Remembering]:
    return {n: Remembering(str(p)) for n, p in family.items()}


def _run(loaded: dict[str, Remembering], suspect: str) -> Any:
    tok = loaded["a"].teacher.tokenizer
    load = loaded
    return output_match_test(
        load[suspect],
        {n: load[n] for n in ("a", "b", "c")},
        {n: load[n] for n in ("r1", "r2", "r3")},
        word_prompts(64, seed=99),  # fresh prompts, none taught
        tok,
        max_tokens=16,
        alpha=0.01,
    )


def test_the_student_is_matched_to_its_true_parent(loaded: dict[str, Remembering]) -> None:
    r = _run(loaded, "student")
    assert r.parent == "b", r
    b = next(c for c in r.candidates if c.name == "b")
    assert b.p_holm < 1e-3 and b.wins > b.losses
    assert "closer to b" in statement(r)


def test_an_independent_model_gets_no_parent(loaded: dict[str, Remembering]) -> None:
    r = _run(loaded, "independent")
    assert r.parent is None, r
    assert "No candidate" in statement(r)


def test_a_candidate_named_twice_is_refused() -> None:
    from stillroom.errors import InputError

    with pytest.raises(InputError, match="both as candidate and as reference"):
        output_match_test(object(), {"x": 1}, {"x": 2}, ["p"], None)
