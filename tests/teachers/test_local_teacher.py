"""LocalTeacher on a tiny random Gemma 3 (fast, offline), plus one slow test on the real one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stillroom.errors import InputError, TeacherFatalError
from stillroom.runtime.sampling import nucleus as _nucleus
from stillroom.runtime.sampling import pick as _pick
from stillroom.teachers.base import Completion, GenerationParams, TeacherRequest
from stillroom.teachers.local import LocalTeacher
from tests.helpers.tiny_models import make_tiny_lm

PROMPTS = [
    "The quick brown fox",
    "Once upon a time there was a little robot",
    "Hi",
    "Question: what is the capital of France? Answer:",
]
PREFIX = "Classify the review as positive or negative. Label: positive. Label: negative. "


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def teacher(tiny_dir: Path) -> LocalTeacher:
    loaded = LocalTeacher.load(str(tiny_dir), batch_size=4)
    # Seeds derive from the model name; a fixed one (not the temp path) keeps sampled
    # results, such as no choice ending early, the same on every run.
    loaded.model = "tiny"
    return loaded


def requests(prompts: list[str], **params: Any) -> list[TeacherRequest]:
    return [TeacherRequest(prompt=p, params=GenerationParams(**params)) for p in prompts]


def full_logprobs(teacher: LocalTeacher, ids: list[int]) -> torch.Tensor:
    """log_softmax of one unpadded forward pass over the whole sequence: (T, V)."""
    with torch.no_grad():
        logits = teacher.lm(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def prompt_ids(teacher: LocalTeacher, prompt: str) -> list[int]:
    return list(teacher.tokenizer(prompt)["input_ids"])


def texts(completions: list[Completion]) -> list[str]:
    return [c.choices[0].text for c in completions]


# ---- generation -------------------------------------------------------------------------


def test_topk_shapes_and_sorted(teacher: LocalTeacher) -> None:
    out = teacher.generate(requests(PROMPTS, max_tokens=10, top_logprobs=5))
    for prompt, completion in zip(PROMPTS, out, strict=True):
        (choice,) = completion.choices
        t = len(choice.token_ids or [])
        assert choice.top_ids is not None and choice.top_logprobs is not None
        assert choice.top_ids.shape == (t, 5) and choice.top_ids.dtype == np.int64
        assert choice.top_logprobs.shape == (t, 5) and choice.top_logprobs.dtype == np.float32
        assert np.all(np.diff(choice.top_logprobs, axis=1) <= 0)
        assert len(choice.token_logprobs or []) == t
        assert completion.usage.prompt_tokens == len(prompt_ids(teacher, prompt))
        assert completion.usage.completion_tokens == t
        assert choice.finish_reason == "length" and t == 10


def test_no_topk_when_not_asked(teacher: LocalTeacher) -> None:
    (choice,) = teacher.generate(requests(PROMPTS[:1], max_tokens=4))[0].choices
    assert choice.top_ids is None and choice.top_logprobs is None
    assert choice.token_logprobs is not None and len(choice.token_logprobs) == 4


@pytest.mark.parametrize("temperature", [None, 0.7])
def test_topk_matches_full_forward(teacher: LocalTeacher, temperature: float | None) -> None:
    # Batched with left padding, and (when sampling) warped: the record is still the raw
    # distribution of an unpadded forward pass.
    params = dict(max_tokens=12, top_logprobs=8, temperature=temperature, top_p=0.9, seed=1)
    for prompt, completion in zip(
        PROMPTS, teacher.generate(requests(PROMPTS, **params)), strict=True
    ):
        choice = completion.choices[0]
        ids, gen = prompt_ids(teacher, prompt), choice.token_ids or []
        ref = full_logprobs(teacher, ids + gen)[len(ids) - 1 : len(ids) + len(gen) - 1]  # (T, V)
        top = torch.from_numpy(choice.top_ids)
        got = torch.from_numpy(choice.top_logprobs)
        torch.testing.assert_close(got, ref.topk(8).values, atol=1e-4, rtol=0)
        torch.testing.assert_close(got, ref.gather(1, top), atol=1e-4, rtol=0)
        chosen = ref.gather(1, torch.tensor(gen)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(choice.token_logprobs), chosen, atol=1e-4, rtol=0)


def test_greedy_is_deterministic_and_equals_hf_generate(teacher: LocalTeacher) -> None:
    first = teacher.generate(requests(PROMPTS, max_tokens=16))
    again = teacher.generate(requests(PROMPTS, max_tokens=16))
    assert [c.choices[0].token_ids for c in first] == [c.choices[0].token_ids for c in again]
    # HF's own greedy generate on the same left-padded batch (batch_size 4 = one batch).
    tok = teacher.tokenizer
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = teacher.lm.generate(**enc, max_new_tokens=16, do_sample=False)
    hf = out[:, enc["input_ids"].shape[1] :].tolist()
    assert [c.choices[0].token_ids for c in first] == hf


def test_seeded_sampling_is_reproducible(teacher: LocalTeacher) -> None:
    params = dict(max_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    a = texts(teacher.generate(requests(PROMPTS, **params)))
    b = texts(teacher.generate(requests(PROMPTS, **params)))
    assert a == b
    # A request's sample does not depend on which batch it ran in.
    alone = texts(teacher.generate(requests(PROMPTS[1:2], **params)))
    assert alone == a[1:2]
    other_seed = texts(teacher.generate(requests(PROMPTS, **{**params, "seed": 8})))
    assert other_seed != a
    resample = TeacherRequest(prompt=PROMPTS[0], params=GenerationParams(**params), sample_index=1)
    assert teacher.generate([resample])[0].choices[0].text != a[0]


def test_requests_seeded_one_by_one_still_share_batches(
    teacher: LocalTeacher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that seeds every request (as a harvest does) is batched like one that
    seeds none, and each request still gets its own seed's sample."""
    seeded = [
        TeacherRequest(prompt=p, params=GenerationParams(max_tokens=8, temperature=1.0, seed=i))
        for i, p in enumerate(PROMPTS[:4])
    ]
    alone = [texts(teacher.generate([r]))[0] for r in seeded]
    sizes: list[int] = []
    real = teacher._generate_batch

    def counted(reqs: list[TeacherRequest], *args: Any, **kw: Any) -> list[Completion]:
        sizes.append(len(reqs))
        return real(reqs, *args, **kw)

    monkeypatch.setattr(teacher, "_generate_batch", counted)
    together = texts(teacher.generate(seeded))
    assert sizes == [4] and together == alone


def test_text_only_generation_samples_the_same_tokens(teacher: LocalTeacher) -> None:
    # logprobs=False skips the bookkeeping, not the draw: same seeds, same tokens.
    for params in (dict(temperature=0.8, seed=3), dict(temperature=1.0, top_p=0.9, seed=4)):
        asked = requests(PROMPTS, max_tokens=12, top_logprobs=3, stop=("e",), **params)
        full, lean = teacher.generate(asked), teacher.generate(asked, logprobs=False)
        for f, c in zip(full, lean, strict=True):
            assert c.choices[0].text == f.choices[0].text
            assert c.choices[0].token_ids == f.choices[0].token_ids
            assert c.choices[0].token_logprobs is None and c.choices[0].top_ids is None


def test_stop_string_truncates_text_and_tokens(teacher: LocalTeacher) -> None:
    (base,) = teacher.generate(requests(PROMPTS[:1], max_tokens=20, top_logprobs=3))
    text = base.choices[0].text
    stop = next(text[i : i + 3] for i in range(4, len(text)) if text[i : i + 3].isascii())
    expected = text[: text.find(stop)]
    (cut,) = teacher.generate(requests(PROMPTS[:1], max_tokens=20, top_logprobs=3, stop=(stop,)))
    choice = cut.choices[0]
    assert choice.text == expected and choice.finish_reason == "stop"
    ids = choice.token_ids or []
    assert ids == (base.choices[0].token_ids or [])[: len(ids)]
    decoded = teacher.tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded.startswith(expected) and len(decoded) < len(expected) + len(stop)
    assert choice.top_ids is not None and choice.top_ids.shape == (len(ids), 3)
    assert cut.usage.completion_tokens == len(ids)


def test_eos_stops_a_row_early(tiny_dir: Path) -> None:
    teacher = LocalTeacher.load(str(tiny_dir), batch_size=4)
    (base,) = teacher.generate(requests(PROMPTS[1:2], max_tokens=10))
    ids = base.choices[0].token_ids or []
    teacher.eos_token_ids = frozenset({ids[3]})  # pretend the 4th token is EOS
    out = teacher.generate(requests(PROMPTS, max_tokens=10, top_logprobs=2))
    choice = out[1].choices[0]
    end = ids.index(ids[3]) + 1
    assert choice.finish_reason == "stop" and choice.token_ids == ids[:end]
    assert choice.top_ids is not None and choice.top_ids.shape == (end, 2)
    # Other rows of the batch are unaffected by this row leaving it.
    alone = teacher.generate(requests(PROMPTS[:1], max_tokens=10))
    assert out[0].choices[0].token_ids == alone[0].choices[0].token_ids


def test_n_choices(teacher: LocalTeacher) -> None:
    sampled = teacher.generate(requests(PROMPTS[:2], max_tokens=8, temperature=1.0, n=3, seed=3))
    for completion in sampled:
        assert [c.index for c in completion.choices] == [0, 1, 2]
        assert len({c.text for c in completion.choices}) == 3
        assert completion.usage.completion_tokens == 24
    greedy = teacher.generate(requests(PROMPTS[:1], max_tokens=8, n=2))[0].choices
    single = teacher.generate(requests(PROMPTS[:1], max_tokens=8))[0].choices[0]
    assert greedy[0].token_ids == greedy[1].token_ids == single.token_ids


def test_chat_messages_use_the_template(teacher: LocalTeacher) -> None:
    messages = (("user", "hello there!"),)
    request = TeacherRequest(messages=messages, params=GenerationParams(max_tokens=5))
    (completion,) = teacher.generate([request])
    text = teacher.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello there!"}], tokenize=False, add_generation_prompt=True
    )
    ids = teacher.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert completion.usage.prompt_tokens == len(ids)
    assert ids.count(teacher.tokenizer.bos_token_id) == 1
    assert len(completion.choices[0].token_ids or []) == 5


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-10, 10), min_size=2, max_size=2000),
    st.floats(0.05, 0.99),
)
def test_nucleus_is_the_smallest_set_reaching_p(logits: list[float], top_p: float) -> None:
    probs = torch.softmax(torch.tensor([logits]), dim=-1)
    kept, ids = _nucleus(probs, top_p)
    kept, ids = kept[0], ids[0]
    mass = float(kept.sum())
    assert mass >= top_p - 1e-5 or torch.isclose(kept.sum(), probs.sum())
    assert torch.equal(kept[kept > 0], probs[0, ids[kept > 0]])  # unchanged, right ids
    assert mass - float(kept[kept > 0].min()) < top_p + 1e-5  # minimal


def test_sampling_follows_the_distribution() -> None:
    # 20k seeded draws from a known distribution: frequencies within 4 sigma.
    probs = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    logits = probs.log().expand(20_000, -1)
    gens = [torch.Generator().manual_seed(i) for i in range(20_000)]
    params = GenerationParams(temperature=1.0, top_p=0.85)
    picks = _pick(logits, params, gens)
    freq = torch.bincount(picks, minlength=5).double() / 20_000
    nucleus = torch.tensor([0.5, 0.25, 0.15, 0.0, 0.0]) / 0.9  # 0.5+0.25+0.15 passes 0.85
    sigma = (nucleus * (1 - nucleus) / 20_000).sqrt()
    assert torch.all((freq - nucleus).abs() <= 4 * sigma + 1e-9)


# ---- scoring ----------------------------------------------------------------------------


def reference_score(teacher: LocalTeacher, prompt: str, candidate: str) -> float:
    ids = prompt_ids(teacher, prompt)
    cand = list(teacher.tokenizer(candidate, add_special_tokens=False)["input_ids"])
    lp = full_logprobs(teacher, ids + cand)
    return sum(float(lp[len(ids) - 1 + j, t]) for j, t in enumerate(cand))


CANDIDATES = [" positive", " negative", " neutral zebra review", " x"]


def test_score_equals_full_forward(teacher: LocalTeacher) -> None:
    lengths = {len(teacher.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in CANDIDATES}
    assert min(lengths) == 1 and max(lengths) > 2  # single- and multi-token candidates
    for prompt in PROMPTS:
        got = teacher.score(prompt, CANDIDATES)
        want = [reference_score(teacher, prompt, c) for c in CANDIDATES]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_score_batch_reuses_shared_prefix(tiny_dir: Path) -> None:
    teacher = LocalTeacher.load(str(tiny_dir), batch_size=3)
    prompts = [PREFIX + s for s in ["Review: great fun. Label:", "Review: dull. Label:", "ok"]]
    prompts += [PREFIX + "Review: the cat sat on the mat. Label:"]  # second chunk
    want = [[reference_score(teacher, p, c) for c in CANDIDATES] for p in prompts]
    got = teacher.score_batch(prompts, CANDIDATES)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert teacher._prefix is not None and len(teacher._prefix[0]) >= 8
    # Later calls, one prompt at a time, hit the cached prefix and still agree.
    np.testing.assert_allclose(teacher.score(prompts[1], CANDIDATES), want[1], atol=1e-4)


def test_score_in_small_pieces_agrees(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny KV budget forces one prompt per chunk and one candidate per group.
    teacher = LocalTeacher.load(str(tiny_dir), batch_size=4)
    prompts = [PREFIX + "Review: great fun. Label:", "Hi", PROMPTS[1]]
    whole = teacher.score_batch(prompts, CANDIDATES)
    monkeypatch.setattr("stillroom.teachers.local._SCORE_ROW_TOKENS", 10)
    teacher._prefix = None
    np.testing.assert_allclose(teacher.score_batch(prompts, CANDIDATES), whole, atol=1e-5)


def test_score_rejects_empty_candidates(teacher: LocalTeacher) -> None:
    with pytest.raises(InputError, match="non-empty"):
        teacher.score("hi", ["", " a"])


# ---- async micro-batching ---------------------------------------------------------------


async def test_concurrent_complete_calls_share_batches(tiny_dir: Path) -> None:
    teacher = LocalTeacher.load(str(tiny_dir), batch_size=4)
    prompts = [" ".join(["word"] * (i + 1)) for i in range(8)]  # distinct prompt lengths
    expected = texts(teacher.generate(requests(prompts, max_tokens=6)))
    batches: list[int] = []
    generate = teacher.generate

    def counting(reqs: list[TeacherRequest]) -> list[Completion]:
        batches.append(len(reqs))
        return generate(reqs)

    teacher.generate = counting  # type: ignore[method-assign]
    out = await asyncio.gather(*(teacher.complete(r) for r in requests(prompts, max_tokens=6)))
    await teacher.aclose()
    assert len(batches) < len(prompts) and max(batches) <= 4
    assert [c.usage.prompt_tokens for c in out] == [len(prompt_ids(teacher, p)) for p in prompts]
    assert texts(list(out)) == expected
    assert teacher.concurrency == 8


async def test_complete_groups_by_params(teacher: LocalTeacher) -> None:
    mixed = requests(PROMPTS[:2], max_tokens=3) + requests(PROMPTS[2:], max_tokens=5)
    out = await asyncio.gather(*(teacher.complete(r) for r in mixed))
    assert [len(c.choices[0].token_ids or []) for c in out] == [3, 3, 5, 5]


async def test_failed_batch_fails_only_its_callers(tiny_dir: Path) -> None:
    teacher = LocalTeacher.load(str(tiny_dir), batch_size=2)
    generate, calls = teacher.generate, []

    def flaky(reqs: list[TeacherRequest]) -> list[Completion]:
        calls.append(len(reqs))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return generate(reqs)

    teacher.generate = flaky  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(teacher.complete(r) for r in requests(PROMPTS, max_tokens=2)), return_exceptions=True
    )
    assert [type(r) for r in results] == [RuntimeError, RuntimeError, Completion, Completion]


async def test_bad_request_fails_only_its_caller(teacher: LocalTeacher) -> None:
    good = teacher.complete(requests(PROMPTS[:1], max_tokens=2)[0])
    bad = teacher.complete(TeacherRequest(prompt=None, messages=None))
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert isinstance(results[0], Completion)
    assert isinstance(results[1], TeacherFatalError)


# ---- loading errors ---------------------------------------------------------------------


def test_missing_folder_says_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TeacherFatalError, match="no model folder.*gemma-3-270m"):
        LocalTeacher.load(str(tmp_path / "nowhere"))
    with pytest.raises(TeacherFatalError, match="no config.json"):
        LocalTeacher.load(str(tmp_path))
    with pytest.raises(TeacherFatalError, match="dtype"):
        LocalTeacher.load(str(tmp_path), dtype="float8")


def test_default_teacher_dir_is_cached_and_crash_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stillroom.runtime.gemma as gemma

    calls: list[str] = []

    def assemble(directory: Path) -> Path:
        calls.append("assemble")
        return directory / "model.gguf"

    def crash(model: Any, tokenizer: Any, directory: Path) -> None:
        directory.mkdir(parents=True)
        (directory / "model.safetensors").write_text("half written")
        raise KeyboardInterrupt

    def save(model: Any, tokenizer: Any, directory: Path) -> None:
        directory.mkdir(parents=True)
        (directory / "config.json").write_text("{}")

    monkeypatch.setattr(gemma, "assemble_gguf", assemble)
    monkeypatch.setattr(gemma, "load_gguf", lambda path: (object(), object()))
    monkeypatch.setattr(gemma, "save_dequantized", crash)
    with pytest.raises(KeyboardInterrupt):
        gemma.default_teacher_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no half model, no temp folder left behind
    monkeypatch.setattr(gemma, "save_dequantized", save)
    monkeypatch.setenv("STILLROOM_CACHE", str(tmp_path))
    target = gemma.default_teacher_dir()
    assert target == tmp_path / "gemma-3-270m" and (target / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["gemma-3-270m"]
    calls.clear()
    assert gemma.default_teacher_dir(tmp_path) == target and calls == []  # cached


# ---- the real teacher -------------------------------------------------------------------


@pytest.mark.slow
def test_gemma_teacher_end_to_end(tmp_path: Path) -> None:
    from stillroom.runtime.gemma import assemble_gguf, load_gguf

    teacher = LocalTeacher.load("gemma-3-270m")
    prompts = ["The Eiffel Tower is located in the city of", "def fibonacci(n):"]
    reqs = requests(prompts, max_tokens=12, top_logprobs=20)
    reqs.append(
        TeacherRequest(
            messages=(("user", "Name a colour."),),
            params=GenerationParams(max_tokens=12, top_logprobs=20),
        )
    )
    out = teacher.generate(reqs)
    assert "Paris" in out[0].choices[0].text
    for request, completion in zip(reqs, out, strict=True):
        choice = completion.choices[0]
        assert choice.top_ids is not None and choice.top_logprobs is not None
        assert choice.top_ids.shape[1] == 20 and len(choice.token_ids or []) >= 1
        if request.prompt is not None:  # top-k against an unpadded full forward pass
            ids, gen = prompt_ids(teacher, request.prompt), choice.token_ids or []
            ref = full_logprobs(teacher, ids + gen)[len(ids) - 1 : len(ids) + len(gen) - 1]
            got = torch.from_numpy(choice.top_logprobs)
            torch.testing.assert_close(got, ref.topk(20).values, atol=1e-3, rtol=0)

    labels = [" Paris", " London", " Berlin"]
    scores = teacher.score("The capital of France is", labels)
    assert int(np.argmax(scores)) == 0
    want = [reference_score(teacher, "The capital of France is", c) for c in labels]
    np.testing.assert_allclose(scores, want, atol=1e-3)

    # The cached folder holds exactly what the GGUF loads to.
    gguf_model, _ = load_gguf(assemble_gguf(tmp_path))
    batch = torch.tensor([prompt_ids(teacher, "The capital of France is")])
    with torch.no_grad():
        a, b = gguf_model(batch).logits, teacher.lm(batch).logits
    assert torch.equal(a, b)
