"""ProcessTeacher: the same answers as LocalTeacher, from a model in a child process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stillroom.errors import TeacherFatalError
from stillroom.teachers.base import Completion, GenerationParams, TeacherRequest
from stillroom.teachers.local import LocalTeacher
from stillroom.teachers.process import ProcessTeacher
from stillroom.watermark.detect import detect
from stillroom.watermark.key import generate_key
from tests.helpers.tiny_models import make_tiny_lm

PROMPTS = ["The quick brown fox", "Once upon a time", "Hi", "Question: why? Answer:"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny"))


def _requests(**params: object) -> list[TeacherRequest]:
    return [TeacherRequest(prompt=p, params=GenerationParams(**params)) for p in PROMPTS]  # type: ignore[arg-type]


async def test_answers_equal_the_in_process_teacher(tiny_dir: Path) -> None:
    local = LocalTeacher.load(str(tiny_dir), batch_size=4)
    remote = ProcessTeacher(str(tiny_dir), batch_size=4)
    try:
        assert remote.model == local.model and remote.eos_token_ids == local.eos_token_ids
        reqs = _requests(max_tokens=6, temperature=1.0, seed=3, top_logprobs=2)
        expected = local.generate(reqs)
        got = await asyncio.gather(*(remote.complete(r) for r in reqs))
        for a, b in zip(got, expected, strict=True):
            assert a.choices[0].token_ids == b.choices[0].token_ids
            assert a.choices[0].text == b.choices[0].text
            assert a.usage == b.usage
        # Scoring goes through the same pipe.
        scored = TeacherRequest(prompt="Label:", candidates=(" yes", " no"))
        (answer,) = await asyncio.gather(remote.complete(scored))
        assert answer.choices[0].label_logprobs == pytest.approx(
            local.score("Label:", [" yes", " no"]), abs=1e-5
        )
    finally:
        await remote.aclose()
    assert not remote._process.is_alive()


def test_prompt_log_probs_equal_the_in_process_teachers(tiny_dir: Path) -> None:
    """What `echo` with `logprobs` and on-policy scoring read: prompt log-probs of text and
    of token ids, through the pipe, as the in-process teacher gives them."""
    local = LocalTeacher.load(str(tiny_dir), batch_size=4)
    remote = ProcessTeacher(str(tiny_dir), batch_size=4)
    try:
        assert remote.vocab_size == local.vocab_size > 0
        pairs = [(remote.prompt_logprobs(PROMPTS, 3), local.prompt_logprobs(PROMPTS, 3))]
        ids = [local.tokenizer(p)["input_ids"] for p in PROMPTS[:2]]
        pairs.append((remote.sequence_logprobs(ids, 2), local.sequence_logprobs(ids, 2)))
        for got, expected in pairs:
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):
                assert list(a.ids) == list(b.ids)
                assert (a.top_ids == b.top_ids).all()
                assert list(a.chosen) == pytest.approx(list(b.chosen), abs=1e-5)
    finally:
        remote.close()


async def test_bad_request_fails_its_caller_and_the_model_goes_on(tiny_dir: Path) -> None:
    remote = ProcessTeacher(str(tiny_dir), batch_size=4)
    try:
        good = remote.complete(_requests(max_tokens=2)[0])
        bad = remote.complete(TeacherRequest(prompt=None, messages=None))
        results = await asyncio.gather(good, bad, return_exceptions=True)
        assert isinstance(results[0], Completion)
        assert isinstance(results[1], TeacherFatalError) and results[1].status == 400
        # A request's own fault raised in the child keeps its status across the pipe, so the
        # gateway answers 400, not "model unavailable".
        chat_scored = TeacherRequest(messages=(("user", "x"),), candidates=(" yes", " no"))
        with pytest.raises(TeacherFatalError, match="plain prompts") as crossed:
            remote.answer([chat_scored])
        assert crossed.value.status == 400
        # An error raised in the child comes back to the batch's callers only.
        with pytest.raises(Exception, match="candidate"):
            remote.answer([TeacherRequest(prompt="x", candidates=("",))])
        assert remote.answer(_requests(max_tokens=2)[:1])[0].choices[0].token_ids
    finally:
        remote.close()


def test_a_dead_model_process_is_a_clear_error(tiny_dir: Path) -> None:
    remote = ProcessTeacher(str(tiny_dir), batch_size=4)
    remote._process.kill()
    remote._process.join()
    with pytest.raises(TeacherFatalError, match="model process"):
        remote.answer(_requests(max_tokens=2)[:1])
    remote.close()


def test_a_missing_model_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(TeacherFatalError, match="no model folder"):
        ProcessTeacher(str(tmp_path / "nowhere"))


def test_watermark_applies_in_the_child(tiny_dir: Path) -> None:
    key = generate_key(gamma=0.5, delta=8.0, context_width=1)
    remote = ProcessTeacher(str(tiny_dir), batch_size=4, watermark=key)
    try:
        out = remote.answer(_requests(max_tokens=40, temperature=1.0, seed=1))
        ids = [t for c in out for t in (c.choices[0].token_ids or [])]
        assert detect(ids, key).z > 4
    finally:
        remote.close()
