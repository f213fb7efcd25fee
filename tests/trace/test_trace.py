"""Radioactivity and identity probes on tiny real models.

A suspect that writes watermarked text must be caught; models that never saw the key must
give p-values that are uniform (so p < 0.01 in about 1% of keys, never systematically).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stillroom.teachers.local import LocalTeacher
from stillroom.trace.probes import identity_probes, makers_named
from stillroom.trace.radioactivity import TupleScore, planned_looks, radioactivity_test
from stillroom.trace.suspects import LocalSuspect, suspect_dtype
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey, generate_key
from tests.helpers.tiny_models import SENTENCES, make_tiny_lm

PROMPTS = [s.split()[0] + " " + s.split()[1] for s in SENTENCES]


class Suspect(LocalSuspect):
    def __init__(self, teacher: LocalTeacher) -> None:  # a loaded model, not a folder
        self.teacher, self.name = teacher, "tiny"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("trace") / "lm")


def test_planned_looks_double_up_to_the_budget() -> None:
    assert planned_looks(2000) == [50, 100, 200, 400, 800, 1600, 2000]
    assert planned_looks(30) == [30]


def test_tuples_count_once_and_prompt_tuples_never() -> None:
    key = WatermarkKey(b"k" * 32, context_width=1)  # hand-built pairs below
    score = TupleScore(GreenList(key))
    score.exclude([1, 2, 3])
    score.add([1, 2, 3, 4, 5])  # (1,2) and (2,3) are the prompt's
    assert score.scored == 2  # (3,4), (4,5)
    score.add([3, 4, 5, 3, 4])  # (5,3) is new; the rest are repeats
    assert score.scored == 3
    assert 0 <= score.green <= 3


def test_a_watermarked_writer_is_caught_and_stops_early(tiny: Path) -> None:
    key = generate_key(delta=4.0)
    writer = LocalTeacher.load(str(tiny), batch_size=16, watermark=key)
    result = radioactivity_test(
        Suspect(writer),
        PROMPTS,
        key,
        writer.tokenizer,
        budget=400,
        target_p=1e-6,
        max_tokens=32,
        temperature=1.0,
    )
    assert result.stopped == "significant" and result.p_value < 1e-6
    assert result.queries < 400 and result.green_rate > key.gamma + 0.1
    # Adjusted for the looks: never smaller than the raw p-value.
    assert all(look.p_adjusted >= look.p_value for look in result.looks)


def test_p_values_are_uniform_for_a_model_that_never_saw_the_key(tiny: Path) -> None:
    clean = LocalTeacher.load(str(tiny), batch_size=16)
    clean.model = "tiny"  # sampling seeds derive from the name: not from a temp path
    suspect = Suspect(clean)
    answers = suspect.answer(PROMPTS * 4, max_tokens=32, temperature=1.0, seed=0)
    ids = clean.tokenizer(answers, add_special_tokens=False)["input_ids"]
    prompt_ids = clean.tokenizer(PROMPTS, add_special_tokens=False)["input_ids"]
    p_values = []
    for seed in range(200):  # 200 keys over the same answers: the key is the randomness
        score = TupleScore(GreenList(WatermarkKey(np.random.default_rng(seed).bytes(32))))
        for p in prompt_ids:
            score.exclude(p)
        for a in ids:
            score.add(a)
        p_values.append(score.p_value())
    # The exact binomial test is discrete, so its p-values are super-uniform rather than
    # uniform: P(p <= a) <= a at every level a. Check that at several levels, with room
    # for sampling noise over 200 keys.
    assert score.scored >= 50
    p_arr = np.array(p_values)
    for a in (0.01, 0.05, 0.1, 0.25, 0.5):
        assert np.mean(p_arr <= a) <= a + 3 * np.sqrt(a * (1 - a) / len(p_arr)), a
    assert np.mean(p_arr <= 0.5) > 0.2  # and not stuck near 1 either


def test_identity_probes_report_named_makers(tiny: Path) -> None:
    assert makers_named("I am Gemma, a model trained by Google DeepMind.") == ["Google"]
    assert makers_named("I'm a helpful assistant.") == []

    class Scripted:
        name = "scripted"

        def answer(self, prompts: list[str], **_: Any) -> list[str]:
            return ["I am Gemma, made by Google."] * (len(prompts) - 1) + ["Gemma or Llama or GPT"]

    result = identity_probes(Scripted())
    assert result.claims == {"Google": 4}
    real = identity_probes(Suspect(LocalTeacher.load(str(tiny))), max_tokens=8)
    assert len(real.answers) == 5 and all(isinstance(a["answer"], str) for a in real.answers)


class Canned:
    """A suspect that answers at once, keeping the seeds and batches it was asked with."""

    batch_size = 16
    name = "canned"

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []  # (batch length, seed)

    def answer(
        self, prompts: list[str], *, max_tokens: int, temperature: float, seed: int
    ) -> list[str]:
        self.asked.append((len(prompts), seed))
        return [f"answer {seed + i} to {p}" for i, p in enumerate(prompts)]


def test_progress_after_each_batch_before_each_look(tiny: Path) -> None:
    tok = LocalTeacher.load(str(tiny)).tokenizer
    suspect, batches, looks = Canned(), [], []
    radioactivity_test(
        suspect, PROMPTS, generate_key(), tok, budget=120, target_p=0.0,
        progress=lambda look: looks.append(look.queries),
        progress_batch=lambda answered, upto: batches.append((answered, upto)),
    )  # fmt: skip
    assert looks == [50, 100, 120]
    assert batches == [
        (16, 50), (32, 50), (48, 50), (50, 50), (66, 100), (82, 100), (98, 100), (100, 100),
        (116, 120), (120, 120),
    ]  # fmt: skip
    # A batch's seed is the first query's index (plus the seed): query i always has seed i.
    starts = [0, 16, 32, 48, 50, 66, 82, 98, 100, 116]
    assert [s for _, s in suspect.asked] == starts


def test_a_local_suspect_samples_on_one_thread_then_restores_torch(tiny: Path) -> None:
    import torch

    before = torch.get_num_threads()
    suspect = Suspect(LocalTeacher.load(str(tiny)))
    generate, seen = suspect.teacher.generate, []

    def counted(*args: Any, **kw: Any) -> Any:
        seen.append(torch.get_num_threads())
        return generate(*args, **kw)

    suspect.teacher.generate = counted  # type: ignore[method-assign]
    suspect.answer(PROMPTS[:2], max_tokens=4, temperature=1.0, seed=0)
    assert seen == [1] and torch.get_num_threads() == before


def test_a_suspect_folder_answers_with_a_fast_copy_and_reads_as_asked(tiny: Path) -> None:
    import torch

    suspect = LocalSuspect(str(tiny))
    suspect.answer(PROMPTS[:2], max_tokens=4, temperature=1.0, seed=0)
    assert suspect._teacher is None  # answering loads no reading model
    assert suspect.answerer.lm.dtype == getattr(torch, suspect_dtype())
    assert suspect.batch_size == 64
    assert suspect.teacher.lm.dtype == torch.float32 and suspect.teacher.batch_size == 16
