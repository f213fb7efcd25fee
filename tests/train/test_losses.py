"""Distillation losses: the mathematical properties promised by stillroom.train.losses.

- every divergence >= 0, and 0 when the student's buckets equal the teacher's;
- JSD(beta) symmetric at beta = 0.5, <= h(beta), JSD/beta -> forward KL, JSD/(1-beta) ->
  reverse KL, and the endpoints are forward / reverse KL exactly;
- top-k covering the vocabulary: bucket divergences equal the full-vocabulary ones (torch's
  kl_div), at any temperature; a smaller top-k never exceeds them (data processing);
- gradients match finite differences; masked and padded (-inf, id -1) entries change
  nothing; alpha = 0 is exactly CE, alpha = 1 exactly T^2 * KD.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from stillroom.train.losses import (
    forward_kl,
    generalized_jsd,
    logit_kd_loss,
    reverse_kl,
    sequence_kd_loss,
    soft_label_loss,
    topk_buckets,
)

FAST = settings(max_examples=40, deadline=None)
DIVERGENCE_NAMES = ["forward_kl", "reverse_kl", "jsd"]

Case = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tensors here are tiny: handing them to OpenMP threads costs more than it saves, and
    on a busy machine each hand-off can wait a whole scheduler slice."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@st.composite
def shapes(draw: st.DrawFn, max_v: int = 12) -> tuple[int, int, int, int, float]:
    """(seed, n, v, k, logit scale); scale up to 12 makes very peaked distributions."""
    v = draw(st.integers(2, max_v))
    return (
        draw(st.integers(0, 2**31 - 1)),
        draw(st.integers(1, 6)),
        v,
        draw(st.integers(0, v)),
        draw(st.floats(0.1, 12.0)),
    )


def teacher_case(
    seed: int, n: int, v: int, k: int, scale: float, dtype: torch.dtype = torch.float64
) -> Case:
    """Teacher logits (N, V) and their exact top-k ids (N, k), logprobs (N, k) and rest (N,)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g, dtype=torch.float64) * scale
    logp = logits.log_softmax(-1)  # (N, V)
    lp, ids = logp.topk(k, dim=-1)  # (N, k)
    outside = torch.ones(n, v, dtype=torch.bool).scatter(1, ids, False)
    rest = (logp.exp() * outside).sum(-1)  # (N,) exact, not 1 - sum
    return logits.to(dtype), ids, lp.to(dtype), rest.to(dtype)


def student_logits(seed: int, n: int, v: int, scale: float, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.randn(n, v, generator=g, dtype=torch.float64) * scale).to(dtype)


def divergences(s: torch.Tensor, t: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    return {
        "forward_kl": forward_kl(s, t),
        "reverse_kl": reverse_kl(s, t),
        "jsd": generalized_jsd(s, t, beta),
    }


def binary_entropy(beta: float) -> float:
    return -(beta * math.log(beta) + (1 - beta) * math.log1p(-beta))


# --- divergences on buckets --------------------------------------------------------------


@FAST
@given(shapes(), st.floats(0.0, 1.0), st.floats(0.25, 4.0), st.booleans())
def test_divergences_are_nonnegative(
    shape: tuple[int, int, int, int, float], beta: float, temperature: float, exact_rest: bool
) -> None:
    seed, n, v, k, scale = shape
    _, ids, lp, rest = teacher_case(seed, n, v, k, scale, torch.float32)
    s, t = topk_buckets(
        student_logits(seed, n, v, scale, torch.float32),
        ids,
        lp,
        rest if exact_rest else None,
        temperature,
    )
    for name, d in divergences(s, t, beta).items():
        assert d.shape == (n,)
        assert bool((d >= -1e-6).all()), (name, d)
    if 0.0 < beta < 1.0:  # the endpoints are KLs, unbounded
        assert bool((generalized_jsd(s, t, beta) <= binary_entropy(beta) + 1e-6).all())


@FAST
@given(shapes(), st.integers(0, 2**31 - 1))
def test_nonnegative_even_for_inconsistent_teacher_logprobs(
    shape: tuple[int, int, int, int, float], seed2: int
) -> None:
    """Harvested logprobs are rounded and may sum past 1: renormalising keeps KL >= 0."""
    seed, n, v, k, scale = shape
    g = torch.Generator().manual_seed(seed2)
    ids = torch.stack([torch.randperm(v, generator=g)[:k] for _ in range(n)])  # (N, k)
    lp = -torch.rand(n, k, generator=g) * 3  # (N, k) arbitrary, often sum(exp) > 1
    lp[torch.rand(n, k, generator=g) < 0.3] = -math.inf
    s, t = topk_buckets(student_logits(seed, n, v, scale, torch.float32), ids, lp, None)
    assert torch.allclose(t.exp().sum(-1), torch.ones(n))
    for name, d in divergences(s, t, 0.3).items():
        assert bool((d >= -1e-6).all()), (name, d)


@FAST
@given(shapes(), st.floats(0.0, 1.0), st.booleans(), st.floats(-50.0, 50.0))
def test_zero_when_student_equals_teacher(
    shape: tuple[int, int, int, int, float], beta: float, exact_rest: bool, shift: float
) -> None:
    seed, n, v, k, scale = shape
    logits, ids, lp, rest = teacher_case(seed, n, v, k, scale)
    # the student reproduces the teacher, up to a logit shift (which softmax ignores)
    s, t = topk_buckets(logits + shift, ids, lp, rest if exact_rest else None)
    for name, d in divergences(s, t, beta).items():
        assert torch.allclose(d, torch.zeros_like(d), atol=1e-12), (name, d)
    # float32 (unshifted), with the stored rest: log-probs are good to ~eps * |logit|
    s, t = topk_buckets(logits.float(), ids, lp.float(), rest.float())
    atol = 1e-6 * max(1.0, float(logits.abs().max()) / 10)
    for name, d in divergences(s, t, beta).items():
        assert torch.allclose(d, torch.zeros_like(d), atol=atol), (name, d)


def test_derived_teacher_rest_keeps_precision_in_float32() -> None:
    # a confident teacher: 1 - sum(p) = 1.2e-7 would round to 0 in a naive float32 sum
    _, ids, lp, rest = teacher_case(0, 2, 8, 6, 7.0)
    _, t = topk_buckets(torch.zeros(2, 8), ids, lp.float(), None)
    assert torch.allclose(t[:, -1].exp().double(), rest, rtol=1e-3)


@FAST
@given(shapes(), st.floats(0.01, 0.99))
def test_jsd_symmetric_at_half_and_bounded(
    shape: tuple[int, int, int, int, float], beta: float
) -> None:
    seed, n, v, k, scale = shape
    _, ids, lp, rest = teacher_case(seed, n, v, k, scale)
    s, t = topk_buckets(student_logits(seed, n, v, scale, torch.float64), ids, lp, rest)
    assert torch.allclose(generalized_jsd(s, t, 0.5), generalized_jsd(t, s, 0.5), atol=1e-12)
    # swapping roles is the same as mirroring beta
    assert torch.allclose(generalized_jsd(s, t, beta), generalized_jsd(t, s, 1 - beta), atol=1e-12)


@FAST
@given(shapes())
def test_jsd_endpoints_and_limits(shape: tuple[int, int, int, int, float]) -> None:
    seed, n, v, k, _ = shape
    # moderate logits: the limits need beta << the smallest probability ratio
    _, ids, lp, rest = teacher_case(seed, n, v, k, 1.0)
    s, t = topk_buckets(student_logits(seed, n, v, 1.0, torch.float64), ids, lp, rest)
    fwd, rev = forward_kl(s, t), reverse_kl(s, t)
    # endpoints: exactly forward / reverse KL
    assert torch.equal(generalized_jsd(s, t, 0.0), fwd)
    assert torch.equal(generalized_jsd(s, t, 1.0), rev)
    # inside, JSD itself tends to 0 at both ends; JSD/beta and JSD/(1-beta) tend to the KLs.
    # The remainder is O(beta * p/q): take beta well below the smallest probability.
    p, q = t.exp(), s.exp()
    eps = 1e-4 * float(q[p > 0].min())
    assert bool((generalized_jsd(s, t, eps) <= 2 * eps * fwd + 1e-15).all())
    assert torch.allclose(generalized_jsd(s, t, eps) / eps, fwd, rtol=1e-3, atol=1e-7)
    near_one = 1.0 - 1e-4 * float(p[q > 0].min())
    got = generalized_jsd(s, t, near_one) / (1.0 - near_one)
    assert torch.allclose(got, rev, rtol=1e-3, atol=1e-7)


@FAST
@given(shapes(), st.floats(0.25, 4.0), st.floats(0.0, 1.0))
def test_full_coverage_equals_exact_kl(
    shape: tuple[int, int, int, int, float], temperature: float, beta: float
) -> None:
    """k = V (in any order): buckets are the full distributions, at every temperature."""
    seed, n, v, _, scale = shape
    t_logits, ids, lp, _ = teacher_case(seed, n, v, v, scale)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(v, generator=g)
    ids, lp = ids[:, order], lp[:, order]
    s_logits = student_logits(seed, n, v, scale, torch.float64)
    s, t = topk_buckets(s_logits, ids, lp, None, temperature)
    assert bool((s[:, -1] == -math.inf).all()) and bool((t[:, -1] == -math.inf).all())
    full_s = (s_logits / temperature).log_softmax(-1)  # (N, V)
    full_t = (t_logits / temperature).log_softmax(-1)
    torch_fwd = F.kl_div(full_s, full_t, reduction="none", log_target=True).sum(-1)
    torch_rev = F.kl_div(full_t, full_s, reduction="none", log_target=True).sum(-1)
    assert torch.allclose(forward_kl(s, t), torch_fwd, rtol=1e-9, atol=1e-10)
    assert torch.allclose(reverse_kl(s, t), torch_rev, rtol=1e-9, atol=1e-10)
    assert torch.allclose(
        generalized_jsd(s, t, beta), generalized_jsd(full_s, full_t, beta), atol=1e-10
    )


@FAST
@given(shapes(), st.floats(0.0, 1.0))
def test_buckets_never_exceed_full_vocabulary_divergence(
    shape: tuple[int, int, int, int, float], beta: float
) -> None:
    """Merging outcomes into the rest bucket can only lose information (data processing)."""
    seed, n, v, k, scale = shape
    t_logits, ids, lp, rest = teacher_case(seed, n, v, k, scale)
    s_logits = student_logits(seed, n, v, scale, torch.float64)
    s, t = topk_buckets(s_logits, ids, lp, rest)
    full = divergences(s_logits.log_softmax(-1), t_logits.log_softmax(-1), beta)
    for name, d in divergences(s, t, beta).items():
        assert bool((d <= full[name] + 1e-9).all()), name


def test_student_rest_keeps_precision_when_tiny() -> None:
    logits = torch.tensor([[60.0, 0.0, 0.0, 0.0, 0.0]])  # rest = 4 e^-60 / (1 + ...)
    s, _ = topk_buckets(logits, torch.tensor([[0]]), torch.tensor([[0.0]]), None)
    assert s[0, 1].item() == pytest.approx(math.log(4) - 60, abs=1e-4)


@FAST
@given(shapes(), st.floats(0.25, 4.0))
def test_teacher_temperature_powers_bucket_probabilities(
    shape: tuple[int, int, int, int, float], temperature: float
) -> None:
    seed, n, v, k, scale = shape
    _, ids, lp, rest = teacher_case(seed, n, v, k, scale)
    _, t = topk_buckets(student_logits(seed, n, v, 1.0, torch.float64), ids, lp, rest, temperature)
    raw = torch.cat([lp, rest.clamp(min=math.exp(-100)).log()[:, None]], dim=-1)  # (N, k+1)
    if k == v:  # no token outside the top-k: no rest bucket (-inf in t)
        raw, t = raw[:, :k], t[:, :k]
    # log-ratios between buckets shrink by 1/T, and the buckets sum to 1
    assert torch.allclose(t - t[:, :1], (raw - raw[:, :1]) / temperature, atol=1e-9)
    assert torch.allclose(t.exp().sum(-1), torch.ones(n, dtype=torch.float64))


# --- padding, masking, gradients ---------------------------------------------------------


@FAST
@given(shapes(), st.integers(0, 2**31 - 1), st.sampled_from(DIVERGENCE_NAMES))
def test_padded_entries_are_the_same_as_absent_ones(
    shape: tuple[int, int, int, int, float], seed2: int, divergence: str
) -> None:
    """Entries with logprob -inf and id -1, anywhere in a row, equal a shorter top-k."""
    seed, n, v, k, scale = shape
    _, ids, lp, rest = teacher_case(seed, n, v, k, scale)
    drop = torch.rand(n, k, generator=torch.Generator().manual_seed(seed2)) < 0.4  # (N, k)
    pad_ids, pad_lp = ids.masked_fill(drop, -1), lp.masked_fill(drop, -math.inf)
    # the dropped tokens' mass now belongs to the rest
    pad_rest = rest + (lp.exp() * drop).sum(-1)
    logits = student_logits(seed, n, v, scale, torch.float64).requires_grad_()
    s, t = topk_buckets(logits, pad_ids, pad_lp, pad_rest)
    d = divergences(s, t, 0.5)[divergence]
    d.sum().backward()
    assert logits.grad is not None and bool(logits.grad.isfinite().all())
    for i in range(n):
        keep = ~drop[i]
        row = slice(i, i + 1)
        s1, t1 = topk_buckets(logits[row], ids[row, keep], lp[row, keep], pad_rest[row])
        assert torch.allclose(d[i], divergences(s1, t1, 0.5)[divergence][0], atol=1e-9)


def test_student_ruling_out_the_rest_is_infinitely_far_not_nan() -> None:
    logits = torch.tensor([[1.0, 0.0, -math.inf, -math.inf]], requires_grad=True)
    s, t = topk_buckets(logits, torch.tensor([[0, 1]]), torch.tensor([[-0.5, -2.0]]), None)
    assert s[0, -1].item() == -math.inf and t[0, -1].item() > -math.inf
    assert forward_kl(s, t).item() == math.inf
    reverse_kl(s, t).sum().backward()
    assert logits.grad is not None and bool(logits.grad.isfinite().all())


def test_row_with_no_teacher_entries_is_zero() -> None:
    s, t = topk_buckets(
        torch.randn(1, 5), torch.tensor([[-1, -1]]), torch.full((1, 2), -math.inf), None
    )
    assert s[0, -1].item() == pytest.approx(0.0) and t[0, -1].item() == 0.0
    for d in divergences(s, t, 0.5).values():
        assert d.item() == pytest.approx(0.0, abs=1e-7)


def kd_inputs(seed: int, n: int = 5, v: int = 7, k: int = 3) -> dict[str, torch.Tensor]:
    _, ids, lp, rest = teacher_case(seed, n, v, k, 2.0)
    ids[0, -1], lp[0, -1] = -1, -math.inf  # one padded entry
    g = torch.Generator().manual_seed(seed + 2)
    return {
        "student_logits": student_logits(seed, n, v, 2.0, torch.float64),
        "teacher_ids": ids,
        "teacher_logprobs": lp,
        "teacher_rest": rest,
        "target_ids": torch.randint(0, v, (n,), generator=g),
        "mask": torch.tensor([True, True, False, True, False]),
    }


@pytest.mark.parametrize("divergence", DIVERGENCE_NAMES)
def test_masked_positions_change_nothing(divergence: str) -> None:
    x = kd_inputs(0)
    logits = x.pop("student_logits").requires_grad_()
    parts = logit_kd_loss(logits, **x, divergence=divergence, temperature=1.5)
    parts.total.backward()
    assert logits.grad is not None
    grad = logits.grad.clone()
    assert bool((grad[~x["mask"]] == 0).all())
    # garbage in every masked-out row: NaN logits, ids out of range, NaN rest, bad targets
    off = ~x["mask"]
    bad = {key: val.clone() for key, val in x.items()}
    bad["teacher_ids"][off] = 10**6
    bad["teacher_logprobs"][off] = 0.0
    bad["teacher_rest"][off] = math.nan
    bad["target_ids"][off] = -100
    bad_logits = logits.detach().clone().masked_fill(off[:, None], math.nan).requires_grad_()
    bad_parts = logit_kd_loss(bad_logits, **bad, divergence=divergence, temperature=1.5)
    bad_parts.total.backward()
    assert torch.equal(bad_parts.total, parts.total)
    assert bad_logits.grad is not None and torch.equal(bad_logits.grad, grad)
    # and the same as keeping only the counted rows
    only = {key: val[x["mask"]] for key, val in x.items()}
    kept = logit_kd_loss(logits[x["mask"]], **only, divergence=divergence, temperature=1.5)
    assert torch.allclose(kept.total, parts.total, atol=1e-12)


def test_empty_mask_gives_zero_with_a_gradient() -> None:
    x = kd_inputs(1)
    x["mask"] = torch.zeros(5, dtype=torch.bool)
    logits = x.pop("student_logits").requires_grad_()
    parts = logit_kd_loss(logits, **x)
    parts.total.backward()
    assert parts.total.item() == 0.0 and parts.kd.item() == 0.0
    assert logits.grad is not None and bool((logits.grad == 0).all())
    assert sequence_kd_loss(logits, x["target_ids"], x["mask"]).item() == 0.0


@pytest.mark.parametrize("divergence", DIVERGENCE_NAMES)
@pytest.mark.parametrize("full_coverage", [False, True])
def test_gradients_match_finite_differences(divergence: str, full_coverage: bool) -> None:
    x = kd_inputs(2, k=7 if full_coverage else 3)  # k = V: the rest bucket is empty
    x["teacher_rest"][1] = 0.0  # a teacher rest of exactly 0 (floored)
    logits = x.pop("student_logits").requires_grad_()

    def loss(z: torch.Tensor) -> torch.Tensor:
        kw = {"divergence": divergence, "beta": 0.3, "temperature": 1.7, "alpha": 0.6}
        return logit_kd_loss(z, **x, **kw).total

    assert torch.autograd.gradcheck(loss, (logits,))


def test_bucket_gradients_match_finite_differences() -> None:
    x = kd_inputs(3)
    logits = x["student_logits"].requires_grad_()

    def buckets(z: torch.Tensor) -> torch.Tensor:
        s, _ = topk_buckets(z, x["teacher_ids"], x["teacher_logprobs"], None, 0.8)
        return s.masked_fill(s == -math.inf, 0.0)  # finite for finite differences

    assert torch.autograd.gradcheck(buckets, (logits,))


def test_bfloat16_inputs_compute_in_float32() -> None:
    x = kd_inputs(4)
    bf = x.pop("student_logits").to(torch.bfloat16).requires_grad_()
    parts = logit_kd_loss(bf, **x, divergence="jsd", temperature=2.0)
    assert parts.total.dtype == torch.float32
    parts.total.backward()
    assert bf.grad is not None and bf.grad.dtype == torch.bfloat16
    assert bool(bf.grad.float().isfinite().all())
    ref = logit_kd_loss(bf.detach().float(), **x, divergence="jsd", temperature=2.0)
    assert torch.equal(parts.total, ref.total)
    s, t = topk_buckets(bf.detach(), x["teacher_ids"], x["teacher_logprobs"].bfloat16(), None)
    assert s.dtype == t.dtype == torch.float32


# --- mixing with cross-entropy -----------------------------------------------------------


@FAST
@given(st.integers(0, 1000), st.floats(0.25, 4.0), st.sampled_from(DIVERGENCE_NAMES))
def test_alpha_mixes_kd_and_ce(seed: int, temperature: float, divergence: str) -> None:
    x = kd_inputs(seed)
    logits, mask, targets = x["student_logits"], x["mask"], x["target_ids"]
    kw = {"divergence": divergence, "temperature": temperature}
    pure_ce = logit_kd_loss(**x, **kw, alpha=0.0)
    pure_kd = logit_kd_loss(**x, **kw, alpha=1.0)
    mixed = logit_kd_loss(**x, **kw, alpha=0.25)
    assert pure_ce.ce is not None and torch.equal(pure_ce.total, pure_ce.ce)
    assert torch.equal(pure_kd.total, temperature**2 * pure_kd.kd)
    assert torch.allclose(pure_ce.ce, F.cross_entropy(logits[mask], targets[mask]))
    assert torch.allclose(pure_ce.ce, sequence_kd_loss(logits, targets, mask))
    want = 0.25 * temperature**2 * pure_kd.kd + 0.75 * pure_ce.ce
    assert torch.allclose(mixed.total, want)


def test_alpha_zero_ignores_an_infinite_divergence() -> None:
    x = kd_inputs(5)
    banned = x["teacher_ids"][0, 0]
    x["student_logits"][:, banned] = -math.inf  # the student rules out a teacher top id
    x["target_ids"] = torch.full((5,), int(banned + 1) % 7)  # ruling out a target: CE = inf
    parts = logit_kd_loss(**x, divergence="forward_kl", alpha=0.0)
    assert parts.kd.item() == math.inf
    assert parts.total.isfinite() and parts.ce is not None and torch.equal(parts.total, parts.ce)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ({"alpha": math.nan}, r"alpha must be in \[0, 1\]"),
        ({"beta": -0.1}, r"beta must be in \[0, 1\]"),
        ({"temperature": 0.0}, "temperature must be a positive finite number"),
        ({"temperature": math.inf}, "temperature must be a positive finite number"),
        ({"divergence": "kl"}, "divergence must be one of forward_kl, reverse_kl, jsd"),
    ],
)
def test_bad_arguments_say_what_to_do(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        logit_kd_loss(**kd_inputs(6), **change)


def test_bad_inputs_say_what_to_do() -> None:
    x = kd_inputs(7)
    x["teacher_ids"][0, 0] = 7  # V = 7
    with pytest.raises(ValueError, match="outside the student's vocabulary"):
        logit_kd_loss(**x)
    x = kd_inputs(7)
    x["target_ids"][0] = -100
    with pytest.raises(ValueError, match="exclude padding with the mask"):
        logit_kd_loss(**x)
    x = kd_inputs(7)
    with pytest.raises(ValueError, match=r"must be \(N, V\).*flatten"):
        logit_kd_loss(**{**x, "student_logits": x["student_logits"][None]})
    with pytest.raises(ValueError, match="mask must be a"):
        logit_kd_loss(**{**x, "mask": x["mask"].long()})
    with pytest.raises(ValueError, match="same shape"):
        forward_kl(torch.zeros(2, 3), torch.zeros(2, 4))


# --- soft labels -------------------------------------------------------------------------


@st.composite
def label_case(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, c = draw(st.integers(1, 6)), draw(st.integers(2, 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.floats(0.1, 8.0))
    student = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    # a teacher's verbalizer logprobs: not normalised over the C labels
    teacher = -torch.rand(b, c, generator=g, dtype=torch.float64) * scale - 1.0
    return student, teacher, torch.randint(0, c, (b,), generator=g)


@FAST
@given(label_case(), st.floats(0.25, 4.0), st.floats(-30.0, 30.0))
def test_soft_label_kd_properties(
    case: tuple[torch.Tensor, torch.Tensor, torch.Tensor], temperature: float, shift: float
) -> None:
    student, teacher, gold = case
    parts = soft_label_loss(student, teacher, temperature=temperature)
    assert parts.ce is None and parts.kd.item() >= -1e-9
    assert torch.equal(parts.total, temperature**2 * parts.kd)
    # KL(teacher_T || student_T), the teacher renormalised over the labels after temperature
    want = F.kl_div(
        (student / temperature).log_softmax(-1),
        (teacher / temperature).log_softmax(-1),
        reduction="batchmean",
        log_target=True,
    )
    assert torch.allclose(parts.kd, want, atol=1e-12)
    # zero when the student's logits reproduce the teacher's (renormalised) distribution
    same = soft_label_loss(teacher + shift, teacher, temperature=temperature)
    assert abs(same.kd.item()) < 1e-9
    # alpha mixing with gold labels
    ce = soft_label_loss(student, teacher, temperature=temperature, gold=gold, alpha=0.0)
    assert ce.ce is not None and torch.equal(ce.total, ce.ce)
    assert torch.allclose(ce.ce, F.cross_entropy(student, gold))
    kd = soft_label_loss(student, teacher, temperature=temperature, gold=gold, alpha=1.0)
    assert torch.equal(kd.total, temperature**2 * kd.kd)


def test_soft_label_ce_counts_only_rows_with_gold() -> None:
    """A transfer-set row has no gold (-1): it teaches through KD alone."""
    g = torch.Generator().manual_seed(3)
    student = torch.randn(4, 5, generator=g, dtype=torch.float64)
    teacher = -torch.rand(4, 5, generator=g, dtype=torch.float64) * 3
    gold = torch.tensor([2, -1, 0, -1])
    parts = soft_label_loss(student, teacher, gold=gold, alpha=0.3)
    known = gold >= 0
    assert parts.ce is not None
    assert torch.allclose(parts.ce, F.cross_entropy(student[known], gold[known]))
    assert torch.allclose(parts.total, 0.3 * parts.kd + 0.7 * parts.ce)
    full = soft_label_loss(student, teacher)
    assert torch.allclose(parts.kd, full.kd)  # KD still over every row


def test_soft_label_gradients_and_errors() -> None:
    g = torch.Generator().manual_seed(8)
    student = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 4
    gold = torch.tensor([0, 3, 1])

    def loss(z: torch.Tensor) -> torch.Tensor:
        return soft_label_loss(z, teacher, temperature=2.0, gold=gold, alpha=0.4).total

    assert torch.autograd.gradcheck(loss, (student,))
    with pytest.raises(ValueError, match="pass gold"):
        soft_label_loss(student, teacher, alpha=0.5)
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        soft_label_loss(student, teacher[:, :3])


def test_every_divergence_config_accepts_is_registered() -> None:
    """A divergence is added in one place in losses.py and named in the config's choices."""
    import typing

    from stillroom.config import TrainSection
    from stillroom.train.losses import DIVERGENCES, Divergence

    accepted = typing.get_args(TrainSection.model_fields["divergence"].annotation)
    assert set(accepted) == set(typing.get_args(Divergence)) == set(DIVERGENCES)
