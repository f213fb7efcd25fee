"""The watermark: key files, green lists, the logits processor in LocalTeacher, the detector
and its CLI. Fast ones run on a tiny random Gemma 3; one slow test marks real Gemma text."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from scipy import stats
from typer.testing import CliRunner

from stillroom.cli import watermark as watermark_cli
from stillroom.errors import InputError
from stillroom.teachers.base import GenerationParams, TeacherRequest
from stillroom.teachers.local import LocalTeacher
from stillroom.watermark.detect import detect, detect_many, detect_text, detect_texts
from stillroom.watermark.greenlist import GreenList, group_contexts
from stillroom.watermark.key import WatermarkKey, generate_key, load_key, save_key
from stillroom.watermark.processor import WatermarkProcessor
from tests.helpers.tiny_models import make_tiny_lm

V = 262_144  # Gemma 3's vocabulary: the size the green lists must handle


def fixed_key(seed: int = 0, **params: Any) -> WatermarkKey:
    """A deterministic key, so failures reproduce; context width 1 unless given, as the
    hand-built contexts below are single tokens."""
    params.setdefault("context_width", 1)
    return WatermarkKey(np.random.default_rng(seed).bytes(32), **params)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def load_teacher(tiny_dir: Path, key: WatermarkKey | None) -> LocalTeacher:
    teacher = LocalTeacher.load(str(tiny_dir), batch_size=4, watermark=key)
    teacher.model = "tiny"  # seeds derive from the name: a fixed one reproduces samples
    return teacher


# ---- key files --------------------------------------------------------------------------


def test_key_round_trips_with_owner_only_mode(tmp_path: Path) -> None:
    key = generate_key(gamma=0.3, delta=1.5, context_width=2)
    path = save_key(key, tmp_path / "wm.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == key
    data = json.loads(path.read_text())
    assert data["key_id"] == key.key_id and len(key.key_id) == 12
    assert key.secret.hex() not in repr(key)  # repr is safe to log
    assert [p.name for p in tmp_path.iterdir()] == ["wm.json"]  # no temporary left behind


def test_key_id_names_secret_and_params() -> None:
    key = fixed_key()
    assert key.key_id == fixed_key().key_id
    assert key.key_id != fixed_key(1).key_id
    assert key.key_id != fixed_key(gamma=0.5).key_id
    assert key.key_id != fixed_key(context_width=2).key_id


def test_new_keys_default_to_context_width_2() -> None:
    # benchmarks/watermark.py: width 2 reaches z > 4 on 99.5% of 208 Gemma answers, width 1
    # on 97.7% (repeated pairs count once, and width 1 repeats more of them).
    assert generate_key().context_width == 2


def test_save_refuses_to_overwrite_unless_told(tmp_path: Path) -> None:
    path = tmp_path / "wm.json"
    first = save_key(fixed_key(0), path)
    with pytest.raises(InputError, match="already exists"):
        save_key(fixed_key(1), path)
    assert load_key(first) == fixed_key(0)
    save_key(fixed_key(1), path, overwrite=True)
    assert load_key(path) == fixed_key(1)
    assert len(list(tmp_path.iterdir())) == 1


def write_key_file(tmp_path: Path, **changes: Any) -> Path:
    path = save_key(fixed_key(), tmp_path / "wm.json")
    data = json.loads(path.read_text())
    data.pop("key_id")  # so parameter edits reach their own checks
    for field, value in changes.items():
        if value is ...:
            data.pop(field)
        else:
            data[field] = value
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gamma": 1.5}, "wm.json: gamma is 1.5; give a fraction between 0 and 1"),
        ({"gamma": "0.25"}, "wm.json: gamma is '0.25'; give a number"),
        ({"delta": -1}, "wm.json: delta is -1.0; give a positive logit bias"),
        ({"context_width": 0}, "wm.json: context_width is 0; give a whole number from 1 to 8"),
        ({"context_width": 1.5}, "wm.json: context_width is 1.5; give a whole number"),
        ({"secret": "zz"}, "wm.json: secret is not a hex string"),
        ({"secret": "ab" * 8}, "wm.json: secret is 8 bytes; give 32 random bytes"),
        ({"delta": ...}, "wm.json: the field 'delta' is missing"),
        ({"format": "other"}, "wm.json: format is 'other'"),
        ({"format": ...}, "wm.json: no 'format' field"),
        ({"version": 9}, "wm.json: version is 9; this stillroom reads version 1"),
    ],
)
def test_bad_key_files_name_file_field_and_fix(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError) as info:
        load_key(write_key_file(tmp_path, **changes))
    assert str(info.value).startswith(str(tmp_path / message))


def test_unreadable_key_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such key file; make one with `stillroom"):
        load_key(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "gamma": 0.25,\n  oops\n}')
    with pytest.raises(InputError, match=r"bad.json:3: not valid JSON"):
        load_key(bad)
    edited = save_key(fixed_key(), tmp_path / "edited.json")
    data = json.loads(edited.read_text())
    edited.write_text(json.dumps({**data, "delta": 4.0}))  # key_id no longer matches
    with pytest.raises(InputError, match="the file was edited"):
        load_key(edited)
    with pytest.raises(InputError, match="gamma is 0; give a fraction"):
        generate_key(gamma=0)


# ---- green lists ------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.1, 0.25, 0.5])
def test_green_fraction_is_gamma(gamma: float) -> None:
    green = GreenList(fixed_key(gamma=gamma))
    mask = green.green_mask(torch.tensor([[0], [17], [V - 1], [123_456]]), V)
    assert mask.shape == (4, V) and mask.dtype == torch.bool
    # Each row is V coin flips: 6 standard deviations is ~0.005 at V = 262k.
    tolerance = 6 * (gamma * (1 - gamma) / V) ** 0.5
    assert torch.all((mask.double().mean(dim=1) - gamma).abs() < tolerance)
    # Not clumped in id order either: every block of 4,096 ids is about gamma green.
    blocks = mask[:, : V // 4096 * 4096].reshape(4, -1, 4096).double().mean(dim=2)
    assert torch.all((blocks - gamma).abs() < 6 * (gamma * (1 - gamma) / 4096) ** 0.5)


def test_lists_of_other_contexts_and_keys_are_independent() -> None:
    gamma = 0.25
    tolerance = 6 * (gamma**2 * (1 - gamma**2) / V) ** 0.5
    one = GreenList(fixed_key(0))
    contexts = torch.tensor([[5], [6], [7], [1_000]])  # neighbours too: no shared structure
    masks = one.green_mask(contexts, V)
    for i in range(4):
        for j in range(i + 1, 4):
            both = (masks[i] & masks[j]).double().mean().item()
            assert abs(both - gamma**2) < tolerance, (i, j, both)
    other = GreenList(fixed_key(1)).green_mask(contexts, V)
    for i in range(4):
        assert abs((masks[i] & other[i]).double().mean().item() - gamma**2) < tolerance
    # Neighbouring token ids are independent within a list as well.
    assert abs((masks[0, 1:] & masks[0, :-1]).double().mean().item() - gamma**2) < tolerance


@pytest.mark.parametrize("width", [1, 2, 3])
def test_mask_scalar_and_pair_paths_agree(width: int) -> None:
    green = GreenList(fixed_key(3, context_width=width))
    rng = np.random.default_rng(width)
    contexts = rng.integers(0, V, size=(3, width))
    mask = green.green_mask(torch.from_numpy(contexts), V).numpy()  # (3, V)
    for b in range(3):
        tokens = np.concatenate([[0, V - 1], rng.integers(0, V, size=300)])
        scalar = [green.is_green(tuple(contexts[b]), int(t)) for t in tokens]
        pairs = green.green_pairs(np.repeat(contexts[b : b + 1], len(tokens), axis=0), tokens)
        assert scalar == mask[b, tokens].tolist() == pairs.tolist()
    # A smaller vocabulary is a prefix of the larger one's list (any teacher, one key).
    assert np.array_equal(green.green_mask_np(contexts, 1000), mask[:, :1000])
    with pytest.raises(ValueError, match=f"a context is {width} non-negative token ids"):
        green.is_green(tuple(range(width + 1)), 0)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_grouped_contexts_give_the_pairs_their_own_lists(width: int) -> None:
    # Width 4 of 18-bit ids does not pack into one int64: the row-wise unique must take over.
    rng = np.random.default_rng(10 + width)
    contexts = rng.integers(0, 262_144, size=(40, width))[rng.integers(0, 40, size=500)]
    distinct, where = group_contexts(contexts)
    expected, _ = np.unique(contexts, axis=0, return_inverse=True)
    assert np.array_equal(distinct, expected)
    assert np.array_equal(distinct[where], contexts)
    green = GreenList(fixed_key(5, context_width=width))
    tokens = rng.integers(0, V, size=len(contexts))
    scalar = [green.is_green(tuple(c), int(t)) for c, t in zip(contexts, tokens, strict=True)]
    assert green.green_pairs(contexts, tokens).tolist() == scalar


def test_processor_adds_delta_to_green_logits_only() -> None:
    key = fixed_key(context_width=2, delta=3.0)
    processor = WatermarkProcessor(key)
    logits = torch.randn(3, 1000)
    out = processor(logits, [[1, 2, 3], [9], [4, 5]])  # row 1 is too short for a context
    mask = GreenList(key).green_mask(torch.tensor([[2, 3], [4, 5]]), 1000)
    torch.testing.assert_close(out[[0, 2]], logits[[0, 2]] + 3.0 * mask, rtol=0, atol=0)
    assert torch.equal(out[1], logits[1])
    assert processor(logits, [[1], [2], [3]]) is logits  # no row has a context: untouched
    # Ids named unbiased (the teacher's EOS) never get delta, green or not.
    green_ids = np.flatnonzero(mask[0].numpy())
    eos = [int(i) for i in green_ids[:3]] + [999_999]  # an id beyond the vocabulary is ignored
    kept = WatermarkProcessor(key, unbiased=eos)(logits, [[1, 2, 3]] * 3)
    assert torch.equal(kept[:, eos[:3]], logits[:, eos[:3]])
    torch.testing.assert_close(kept[0, green_ids[3:]], logits[0, green_ids[3:]] + 3.0)


@pytest.mark.parametrize("vocab", [262_144, 1_001])
def test_one_pass_kernel_equals_the_numpy_mask_bit_for_bit(vocab: int) -> None:
    key = fixed_key(3, delta=2.0, context_width=2)
    rng = np.random.default_rng(vocab)
    logits = torch.from_numpy(rng.standard_normal((5, vocab)).astype(np.float32))
    contexts = rng.integers(0, vocab, size=(3, 2)).tolist()
    rows = [4, 0, 2]  # rows in any order; rows 1 and 3 are someone else's
    fast = logits.clone()
    WatermarkProcessor(key, unbiased=[1]).apply_inplace(fast, rows, contexts)
    mask = GreenList(key).green_mask(torch.tensor(contexts), vocab)
    mask[:, 1] = False
    expected = logits.clone()
    expected[rows] = logits[rows].add(mask, alpha=2.0)
    assert torch.equal(fast, expected)
    assert mask.float().mean().item() == pytest.approx(key.gamma, abs=0.02)


def test_without_the_kernel_the_mask_path_gives_the_same_logits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stillroom.watermark import bias_kernel

    key = fixed_key(4, context_width=2)
    logits = torch.randn(4, 3000)
    contexts = [[1, 2], [3, 4], [5], [7, 8]]
    fast = WatermarkProcessor(key)(logits, contexts)
    monkeypatch.setattr(bias_kernel, "_KERNEL", None)
    assert torch.equal(WatermarkProcessor(key)(logits, contexts), fast)
    half = logits.to(torch.bfloat16)  # another dtype takes the mask path as well
    mask = GreenList(key).green_mask(torch.tensor([[1, 2], [3, 4], [7, 8]]), 3000)
    expected = half.clone()
    expected[[0, 1, 3]] = half[[0, 1, 3]].add(mask, alpha=key.delta)
    assert torch.equal(WatermarkProcessor(key)(half, contexts), expected)


# ---- the teacher --------------------------------------------------------------------------


def sample(teacher: LocalTeacher, prompts: list[str], **params: Any) -> list[Any]:
    out = teacher.generate(
        [TeacherRequest(prompt=p, params=GenerationParams(**params)) for p in prompts]
    )
    return [c.choices[0] for c in out]


PROMPTS = ["The quick brown fox", "Once upon a time", "Numbers: one two", "Hi"]


def test_teacher_without_key_is_unchanged(tiny_dir: Path) -> None:
    plain = load_teacher(tiny_dir, None)
    assert plain.watermark is None
    params = dict(max_tokens=12, temperature=1.0, seed=3, top_logprobs=4)
    a, b = sample(plain, PROMPTS, **params), sample(load_teacher(tiny_dir, None), PROMPTS, **params)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    marked = sample(load_teacher(tiny_dir, fixed_key(delta=4.0)), PROMPTS, **params)
    assert [c.token_ids for c in marked] != [c.token_ids for c in a]


@pytest.mark.parametrize(("width", "n"), [(1, 1), (3, 2)])
def test_reported_logprobs_are_the_watermarked_distribution(
    tiny_dir: Path, width: int, n: int
) -> None:
    key = fixed_key(context_width=width, delta=2.5)
    teacher = load_teacher(tiny_dir, key)
    green = GreenList(key)
    params = GenerationParams(max_tokens=10, top_logprobs=6, temperature=1.0, seed=5, n=n)
    out = teacher.generate([TeacherRequest(prompt=p, params=params) for p in PROMPTS])
    # n > 1: each prompt's rows are forked from one prefill and must read its own tail.
    for prompt, choice in [(p, c) for p, o in zip(PROMPTS, out, strict=True) for c in o.choices]:
        ids = list(teacher.tokenizer(prompt)["input_ids"])
        gen = choice.token_ids or []
        with torch.no_grad():  # one unpadded forward; the bias added by hand at each step
            logits = teacher.lm(torch.tensor([ids + gen])).logits[0, len(ids) - 1 : -1].float()
        seq = ids + gen
        for t in range(len(gen)):
            context = seq[: len(ids) + t][-width:]
            if len(context) == width:
                mask = green.green_mask_np(np.array([context]), logits.shape[1])[0]
                mask[list(teacher.eos_token_ids)] = False  # the end of a sequence: never biased
                logits[t] += key.delta * torch.from_numpy(mask)
        ref = torch.log_softmax(logits, dim=-1)  # (T, V)
        got = torch.from_numpy(choice.top_logprobs)
        torch.testing.assert_close(got, ref.topk(6).values, atol=1e-4, rtol=0)
        chosen = ref.gather(1, torch.tensor(gen)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(choice.token_logprobs), chosen, atol=1e-4, rtol=0)


def test_watermarked_generation_is_detected_and_plain_is_not(tiny_dir: Path) -> None:
    key = fixed_key(delta=4.0)
    params = dict(max_tokens=64, temperature=1.0, seed=11)
    prompts = PROMPTS * 2
    marked = sample(load_teacher(tiny_dir, key), prompts, **params)
    plain = sample(load_teacher(tiny_dir, None), prompts, **params)
    for choice in marked:
        found = detect(choice.token_ids, key)
        assert found.tokens_scored >= 40 and found.z > 4 and found.p_value < 1e-4, found
    for choice in plain:
        assert detect(choice.token_ids, key).p_value > 1e-3
    # Gemma's own decode of the ids, re-encoded by the same tokenizer, still carries it.
    tokenizer = load_teacher(tiny_dir, None).tokenizer
    z = [d.z for d in detect_texts([c.text for c in marked], key, tokenizer)]
    assert np.median(z) > 4


# ---- the detector -------------------------------------------------------------------------


def test_detection_counts_and_exact_binomial() -> None:
    key = fixed_key(gamma=0.25)
    green = GreenList(key)
    ids = np.random.default_rng(0).integers(0, V, size=120).tolist()
    found = detect(ids, key)
    expected = sum(green.is_green((ids[i - 1],), ids[i]) for i in range(1, len(ids)))
    assert (found.tokens, found.tokens_scored, found.green) == (120, 119, expected)
    assert found.p_value == pytest.approx(stats.binom.sf(expected - 1, 119, 0.25), rel=1e-12)
    assert found.z == pytest.approx((expected - 0.25 * 119) / (119 * 0.25 * 0.75) ** 0.5)
    assert found.key_id == key.key_id
    short = detect(ids[:1], key)  # no token has a context
    assert (short.tokens_scored, short.green, short.z, short.p_value) == (0, 0, 0.0, 1.0)
    assert detect([], fixed_key(context_width=3)).tokens_scored == 0
    batch = [ids, ids[:50], []]
    assert detect_many(batch, key) == [detect(seq, key) for seq in batch]


def test_repeated_pairs_count_once() -> None:
    key = fixed_key()
    green = GreenList(key)
    # A pair that is green, repeated: counted each time it would look like a strong mark.
    a = next(a for a in range(V) if green.is_green((a,), a + 1) and green.is_green((a + 1,), a))
    b = a + 1
    looped = detect([a, b] * 100, key)
    assert (looped.tokens_scored, looped.green) == (2, 2)
    assert looped.p_value == pytest.approx(0.25**2)
    ids = np.random.default_rng(1).integers(0, V, size=100).tolist()
    once, twice = detect(ids, key), detect(ids + ids, key)
    assert twice.tokens_scored == once.tokens_scored + 1  # only the seam is new
    assert twice.green - once.green in (0, 1)


@pytest.mark.parametrize(("vocab", "width"), [(V, 1), (6, 1), (12, 2)])
def test_p_values_are_uniform_under_the_null(vocab: int, width: int) -> None:
    """Random sequences against random keys: the exact test is valid, and its randomised
    version (which spreads each atom of the binomial uniformly) is exactly uniform.

    A 6-token vocabulary repeats (context, token) pairs all the time: counting them more
    than once fails this test (KS p ~ 1e-34), counting each once passes."""
    rng = np.random.default_rng(vocab + width)
    trials, gamma = 1500, 0.25
    n, green = np.zeros(trials), np.zeros(trials)
    p_exact = np.zeros(trials)
    for i in range(trials):
        key = WatermarkKey(rng.bytes(32), gamma=gamma, context_width=width)
        found = detect(rng.integers(0, vocab, size=int(rng.integers(20, 200))).tolist(), key)
        n[i], green[i], p_exact[i] = found.tokens_scored, found.green, found.p_value
    atom = stats.binom.pmf(green, n, gamma)  # P(X = green): spread uniformly over its width
    p_random = stats.binom.sf(green, n, gamma) + rng.random(trials) * atom
    assert stats.kstest(p_random, "uniform").pvalue > 1e-3
    for alpha in (0.01, 0.05, 0.2, 0.5):  # never more false alarms than alpha (+ noise)
        assert np.mean(p_exact <= alpha) <= alpha + 4 * (alpha * (1 - alpha) / trials) ** 0.5


def test_detect_text_uses_the_tokenizer(tiny_tokenizer: Any) -> None:
    key = fixed_key()
    text = "The cat sat on the mat and looked out of the window at the rain."
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert detect_text(text, key, tiny_tokenizer) == detect(ids, key)
    assert detect_texts([], key, tiny_tokenizer) == []


# ---- the CLI ------------------------------------------------------------------------------


def mounted() -> typer.Typer:
    """The main CLI's way of mounting the app: app.add_typer(watermark_cli.app, name=...)."""
    root = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @root.callback()
    def _root() -> None:
        pass

    root.add_typer(watermark_cli.app, name="watermark")
    return root


runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(mounted(), ["watermark", *args])


def test_cli_keygen(tmp_path: Path) -> None:
    path = tmp_path / "wm.json"
    result = invoke("keygen", "--out", str(path), "--gamma", "0.5", "--context-width", "2")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    key = load_key(path)
    assert printed["key_id"] == key.key_id and key.gamma == 0.5 and key.context_width == 2
    assert key.secret.hex() not in result.stdout
    again = invoke("keygen", "--out", str(path))
    assert isinstance(again.exception, InputError) and "already exists" in str(again.exception)
    assert load_key(path) == key
    forced = invoke("keygen", "--out", str(path), "--force")
    assert forced.exit_code == 0 and load_key(path) != key
    bad = invoke("keygen", "--out", str(tmp_path / "x.json"), "--gamma", "1.5")
    assert "gamma is 1.5; give a fraction between 0 and 1" in str(bad.exception)
    assert "keygen" in invoke("--help").stdout and "Example" in invoke("detect", "--help").stdout


def test_cli_detect_text_file_and_jsonl(tmp_path: Path, tiny_dir: Path) -> None:
    key_file = tmp_path / "wm.json"
    key = fixed_key()
    save_key(key, key_file)
    tok = ["--key-file", str(key_file), "--tokenizer", str(tiny_dir)]
    text = "Once upon a time there was a little robot who liked to count stars."
    result = invoke("detect", text, *tok)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    from transformers import AutoTokenizer

    expected = detect_text(text, key, AutoTokenizer.from_pretrained(tiny_dir))
    assert {k: out[k] for k in ("tokens_scored", "green", "z", "p_value", "key_id")} == {
        k: getattr(expected, k) for k in ("tokens_scored", "green", "z", "p_value", "key_id")
    }
    plain = tmp_path / "answer.txt"
    plain.write_text(text)
    from_file = json.loads(invoke("detect", str(plain), *tok).stdout)
    assert from_file["source"] == str(plain) and from_file["green"] == out["green"]

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": text}) + "\n\n" + json.dumps({"text": "Hi"}) + "\n")
    lines = invoke("detect", str(rows), *tok, "--jsonl-field", "text").stdout.splitlines()
    parsed = [json.loads(line) for line in lines]
    assert [p["line"] for p in parsed] == [1, 3] and parsed[0]["green"] == out["green"]

    missing = invoke("detect", str(rows), *tok, "--jsonl-field", "body")
    assert f"{rows}:1: no text field 'body'" in str(missing.exception)
    assert "--jsonl-field" in str(invoke("detect", str(rows), *tok).exception)
    typo = invoke("detect", str(tmp_path / "nope.txt"), *tok)
    assert "nope.txt: no such file" in str(typo.exception)
    no_key = invoke("detect", text, "--key-file", str(tmp_path / "none.json"))
    assert "no such key file" in str(no_key.exception)


def test_cli_module_imports_without_torch() -> None:
    code = "import sys, stillroom.cli.watermark; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- the real teacher ---------------------------------------------------------------------


@pytest.mark.slow
def test_gemma_watermark_is_detected_in_text() -> None:
    key = fixed_key()
    teacher = LocalTeacher.load("gemma-3-270m", watermark=key)
    prompts = ["Write a short story about a lighthouse keeper.", "Explain how rain forms."]
    requests = [
        TeacherRequest(
            messages=(("user", p),),
            params=GenerationParams(max_tokens=96, temperature=1.0, seed=0),
        )
        for p in prompts
    ]
    texts = [c.choices[0].text for c in teacher.generate(requests)]
    found = detect_texts(texts, key, teacher.tokenizer)
    # Gemma may end an answer early; every answer long enough to judge is caught, and the
    # answers together overwhelmingly so.
    assert all(d.p_value < 1e-3 for d in found if d.tokens_scored >= 20), found
    assert sum(d.tokens_scored for d in found) >= 60
    assert detect_texts(["\n".join(texts)], key, teacher.tokenizer)[0].p_value < 1e-8
    assert all(d.p_value > 1e-4 for d in detect_texts(texts, fixed_key(1), teacher.tokenizer))
