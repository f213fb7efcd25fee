"""Distillation losses: pure functions of tensors, tested for their mathematical properties.

Notation: P is the teacher's distribution at a position, Q the student's. Every divergence
takes (student_logq, teacher_logp), log-probabilities over the same outcomes on the last
dimension, and returns one value per row, (N, K) -> (N,):

    forward_kl          KL(P || Q) = sum P (log P - log Q)       mass covering (classic KD)
    reverse_kl          KL(Q || P) = sum Q (log Q - log P)       mode seeking
    generalized_jsd     JSD(beta) = beta KL(P || M) + (1 - beta) KL(Q || M),
                        M = beta P + (1 - beta) Q

JSD(beta) is Eq. (1) of Agarwal et al. 2024 ("On-Policy Distillation of Language Models",
GKD), unscaled, the same numbers as TRL's GKDTrainer. For 0 < beta < 1 it lies in
[0, h(beta)], h the binary entropy (ln 2 at beta = 0.5), and it tends to 0 at both ends:
JSD(beta) / beta -> forward KL as beta -> 0, JSD(beta) / (1 - beta) -> reverse KL as
beta -> 1. Like TRL, beta = 0 returns forward KL and beta = 1 reverse KL exactly: the
endpoints are the limits of the rescaled JSD, so the value jumps there.

Zero probabilities contribute 0 (0 log 0 = 0) and never make a NaN, in values or gradients;
P > 0 where Q = 0 makes forward KL +inf, as it should.

Top-k buckets. A harvest keeps, per generated token, the teacher's top-k (id, logprob) pairs
at temperature 1 and the mass outside them (the "rest"). `topk_buckets` turns student logits
and those signals into two distributions over k + 1 buckets: the k ids, and everything else.
The student's buckets are exact: its rest is a logsumexp over the logits outside the top-k,
so a tiny rest keeps its precision. Merging outcomes never increases an f-divergence, so a
bucket divergence is a lower bound of the full-vocabulary one, equal when k covers the
vocabulary.

Teacher temperature: the teacher's k + 1 bucket probabilities are raised to 1/T and
renormalised. Exact for the k ids; for the rest bucket an approximation when T != 1, since
(sum of rest p_i)^(1/T) != sum of p_i^(1/T) and the harvest kept only the sum. The
renormalisation also absorbs rounding in harvested logprobs (at T = 1 it only rescales).
A teacher rest of exactly 0 (the codec decodes masses below e^-100 as 0; 1 - sum can round
to 0) is floored at e^-100 so that reverse KL stays finite; where no token lies outside the
top-k, both rest buckets are 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]  # what config accepts
LOG_REST_FLOOR = -100.0  # log of the smallest teacher rest mass the harvest can represent
NEG_INF = float("-inf")


class LossParts(NamedTuple):
    """A loss and its parts: scalar tensors, attached to the graph (call .item() to log)."""

    total: Tensor  # () what to backpropagate
    kd: Tensor  # () mean divergence over counted positions, before alpha and T^2
    ce: Tensor | None  # () mean hard-label cross-entropy; None when no hard labels were given


# --- divergences -------------------------------------------------------------------------


def forward_kl(student_logq: Tensor, teacher_logp: Tensor) -> Tensor:
    """KL(teacher || student) per row: (N, K) log-probs -> (N,)."""
    s, t = _as_pair(student_logq, teacher_logp)
    return _kl(t, s)


def reverse_kl(student_logq: Tensor, teacher_logp: Tensor) -> Tensor:
    """KL(student || teacher) per row: (N, K) log-probs -> (N,)."""
    s, t = _as_pair(student_logq, teacher_logp)
    return _kl(s, t)


def generalized_jsd(student_logq: Tensor, teacher_logp: Tensor, beta: float = 0.5) -> Tensor:
    """GKD's JSD(beta) per row, unscaled; beta = 0 / 1 give forward / reverse KL exactly.

    (N, K) log-probs -> (N,). See the module docstring for the definition and its limits.
    """
    _check_unit("beta", beta)
    s, t = _as_pair(student_logq, teacher_logp)
    if beta == 0.0:
        return _kl(t, s)
    if beta == 1.0:
        return _kl(s, t)
    both_zero = (t == NEG_INF) & (s == NEG_INF)  # (N, K) M = 0 here
    # log M = logaddexp(log beta + log P, log(1 - beta) + log Q); where M = 0 feed finite
    # dummies (logaddexp(-inf, -inf) has a NaN gradient) and put -inf back afterwards
    a = torch.where(both_zero, 0.0, t + math.log(beta))
    b = torch.where(both_zero, 0.0, s + math.log1p(-beta))
    log_m = torch.where(both_zero, NEG_INF, torch.logaddexp(a, b))  # (N, K)
    return beta * _kl(t, log_m) + (1.0 - beta) * _kl(s, log_m)


# Divergences by the name `train.divergence` gives: (student_logq, teacher_logp, beta) -> per
# row. A new one is a function registered here and its name added to `Divergence` (config's
# choices); a test checks the two agree.
PerRowDivergence = Callable[[Tensor, Tensor, float], Tensor]
DIVERGENCE_FNS: dict[str, PerRowDivergence] = {
    "forward_kl": lambda q, p, beta: forward_kl(q, p),
    "reverse_kl": lambda q, p, beta: reverse_kl(q, p),
    "jsd": generalized_jsd,
}
DIVERGENCES: tuple[str, ...] = tuple(DIVERGENCE_FNS)


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(A || B) over the last dim, (..., K) -> (...); terms where A = 0 are exactly 0."""
    pos = log_a > NEG_INF  # (..., K)
    # 0 in place of -inf before subtracting: -inf - -inf is NaN, and a NaN anywhere in the
    # graph poisons the gradient even where a later `where` discards it
    diff = torch.where(pos, log_a, 0.0) - torch.where(pos, log_b, 0.0)
    return (log_a.exp() * diff).sum(dim=-1)


def _as_pair(student_logq: Tensor, teacher_logp: Tensor) -> tuple[Tensor, Tensor]:
    if student_logq.shape != teacher_logp.shape:
        raise ValueError(
            f"student and teacher log-probs must have the same shape, got "
            f"{tuple(student_logq.shape)} and {tuple(teacher_logp.shape)}"
        )
    dtype = torch.promote_types(_compute_dtype(student_logq), _compute_dtype(teacher_logp))
    return student_logq.to(dtype), teacher_logp.to(dtype)


# --- top-k buckets -----------------------------------------------------------------------


def topk_buckets(
    student_logits: Tensor,
    teacher_ids: Tensor,
    teacher_logprobs: Tensor,
    teacher_rest: Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Student and teacher log-probs over the teacher's top-k ids plus one rest bucket.

    student_logits (N, V); teacher_ids (N, k) integer; teacher_logprobs (N, k) at
    temperature 1, -inf for absent entries (their id may be -1, and is never used);
    teacher_rest (N,) probability mass outside the top-k, or None for 1 - sum(exp(logprobs)).
    Present ids in a row must be distinct, as a top-k's are. A derived rest is only as good
    as the logprobs' rounding (float32: ~1e-7 absolute), so pass the harvested rest when
    the teacher is confident and the divergence is reverse KL. Returns (student_logq,
    teacher_logp), each (N, k+1) in float32 (float64 for float64 logits); column k is the
    rest bucket; absent entries are -inf in both. Differentiable in student_logits.
    """
    _check_temperature(temperature)
    present = _check_topk(student_logits, teacher_ids, teacher_logprobs, teacher_rest)  # (N, k)
    dtype = _compute_dtype(student_logits)
    n, v = student_logits.shape
    z = student_logits.to(dtype)  # (N, V)
    if temperature != 1.0:
        z = z / temperature
    log_z = torch.logsumexp(z, dim=-1, keepdim=True)  # (N, 1)
    ids = teacher_ids.long()
    # absent entries gather column 0 (discarded) and mark a dump column v (dropped)
    gathered = z.gather(1, torch.where(present, ids, 0)) - log_z  # (N, k)
    s_top = torch.where(present, gathered, NEG_INF)  # (N, k)
    in_top = torch.zeros(n, v + 1, dtype=torch.bool, device=z.device)
    outside = ~in_top.scatter_(1, torch.where(present, ids, v), True)[:, :v]  # (N, V)
    covered = ~outside.any(dim=-1, keepdim=True)  # (N, 1) no token left for the rest bucket
    no_mass = ~(outside & (z > NEG_INF)).any(dim=-1, keepdim=True)  # (N, 1) student rest = 0
    # rows without rest mass keep their logits so logsumexp and its gradient stay finite
    z_rest = z.masked_fill(~outside & ~no_mass, NEG_INF)  # (N, V)
    s_rest = torch.where(no_mass, NEG_INF, torch.logsumexp(z_rest, -1, keepdim=True) - log_z)
    student_logq = torch.cat([s_top, s_rest], dim=-1)  # (N, k+1)

    t_top = torch.where(present, teacher_logprobs.to(dtype), NEG_INF)  # (N, k)
    if teacher_rest is None:
        t_rest = _log_missing_mass(t_top)  # (N, 1)
    else:
        t_rest = teacher_rest.to(dtype).clamp(min=0.0).log()[:, None]  # (N, 1)
    t_rest = torch.where(covered, NEG_INF, t_rest.clamp(min=LOG_REST_FLOOR))
    teacher = torch.cat([t_top, t_rest], dim=-1)  # (N, k+1)
    teacher_logp = torch.log_softmax(teacher / temperature, dim=-1)  # p^(1/T), renormalised
    return student_logq, teacher_logp


def _log_missing_mass(logp: Tensor) -> Tensor:
    """log(1 - sum(exp(logp))) over the last dim, (N, k) -> (N, 1); -inf once the sum hits 1.

    1 - p_max is taken as -expm1(logp_max) before the other entries are subtracted, so a
    small remainder is not lost to the rounding of 1 (a float32 sum near 1 is good to ~6e-8).
    """
    padded = F.pad(logp, (0, 1), value=NEG_INF)  # (N, k+1): max needs an entry when k = 0
    top, arg = padded.max(dim=-1, keepdim=True)  # (N, 1)
    others = padded.scatter(1, arg, NEG_INF).exp().sum(dim=-1, keepdim=True)  # (N, 1)
    return (-torch.expm1(top) - others).clamp(min=0.0).log()


def _check_topk(
    student_logits: Tensor,
    teacher_ids: Tensor,
    teacher_logprobs: Tensor,
    teacher_rest: Tensor | None,
) -> Tensor:
    """Validate shapes and values; return which top-k entries are present, (N, k) bool."""
    if student_logits.ndim != 2:
        raise ValueError(
            f"student_logits must be (N, V), got shape {tuple(student_logits.shape)}; "
            "flatten batch and time first, e.g. logits.flatten(0, 1)"
        )
    n, v = student_logits.shape
    if teacher_ids.ndim != 2 or teacher_ids.shape != teacher_logprobs.shape:
        raise ValueError(
            f"teacher_ids and teacher_logprobs must both be (N, k), got "
            f"{tuple(teacher_ids.shape)} and {tuple(teacher_logprobs.shape)}"
        )
    if teacher_ids.shape[0] != n:
        raise ValueError(f"teacher signals have {teacher_ids.shape[0]} rows, student_logits {n}")
    if teacher_ids.dtype.is_floating_point or teacher_ids.dtype == torch.bool:
        raise ValueError(f"teacher_ids must be an integer tensor, got {teacher_ids.dtype}")
    if teacher_rest is not None and teacher_rest.shape != (n,):
        raise ValueError(f"teacher_rest must be ({n},), got {tuple(teacher_rest.shape)}")
    if not bool((teacher_logprobs < math.inf).all()):
        raise ValueError("teacher_logprobs must be finite, or -inf for absent entries (no NaN)")
    if teacher_rest is not None and bool(teacher_rest.isnan().any()):
        raise ValueError("teacher_rest must not be NaN; pass None to derive it from the top-k")
    present = teacher_logprobs > NEG_INF  # (N, k)
    bad = present & ((teacher_ids < 0) | (teacher_ids >= v))
    if bool(bad.any()):
        raise ValueError(
            f"teacher id {int(teacher_ids[bad][0])} is outside the student's vocabulary "
            f"[0, {v}): use a student that shares the teacher's tokenizer, and give absent "
            "entries logprob -inf"
        )
    return present


# --- losses ------------------------------------------------------------------------------


def logit_kd_loss(
    student_logits: Tensor,
    teacher_ids: Tensor,
    teacher_logprobs: Tensor,
    teacher_rest: Tensor | None,
    target_ids: Tensor,
    mask: Tensor,
    *,
    divergence: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    alpha: float = 0.5,
) -> LossParts:
    """Logit distillation on harvested top-k signals, mixed with hard-token cross-entropy.

    student_logits (N, V); teacher_* as in `topk_buckets`; target_ids (N,) the tokens the
    teacher generated; mask (N,) bool, True where a position counts. Returns
    total = alpha * T^2 * kd + (1 - alpha) * ce, with kd the mean bucket divergence at
    temperature T (beta is used by "jsd" only) and ce the mean cross-entropy at T = 1, both
    over counted positions. T^2 keeps the KD gradient's scale independent of T (Hinton et
    al. 2015). A weight of exactly 0 drops its term, so alpha = 0 is CE and alpha = 1 is
    T^2 * kd even if the other part is inf. No counted positions: every part is 0.
    """
    _check_unit("alpha", alpha)
    _check_unit("beta", beta)
    _check_temperature(temperature)
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}; got {divergence!r}")
    _check_rows(student_logits, target_ids, mask)
    n = student_logits.shape[0]
    if teacher_ids.shape[:1] != (n,) or teacher_logprobs.shape[:1] != (n,):
        raise ValueError(f"teacher_ids and teacher_logprobs must have N = {n} rows")
    if teacher_rest is not None and teacher_rest.shape != (n,):
        raise ValueError(f"teacher_rest must be ({n},), got {tuple(teacher_rest.shape)}")
    # counted rows only: padding rows may hold anything (garbage ids, NaN logits)
    logits = student_logits[mask]  # (M, V)
    rest = None if teacher_rest is None else teacher_rest[mask]  # (M,)
    s_logq, t_logp = topk_buckets(
        logits, teacher_ids[mask], teacher_logprobs[mask], rest, temperature
    )  # (M, k+1) each
    kd = _mean(DIVERGENCE_FNS[divergence](s_logq, t_logp, beta))  # per row (M,), then mean
    if alpha == 1.0:  # pure KD: the CE term has weight 0, so spend nothing on it
        return LossParts(temperature**2 * kd, kd, None)
    ce = _mean(_token_ce(logits, target_ids[mask]))
    return LossParts(_mix(alpha, temperature**2 * kd, ce), kd, ce)


def sequence_kd_loss(student_logits: Tensor, target_ids: Tensor, mask: Tensor) -> Tensor:
    """Sequence-level KD (Kim & Rush 2016): mean cross-entropy on the teacher's tokens.

    student_logits (N, V), target_ids (N,), mask (N,) bool -> (). 0 with no counted position.
    """
    _check_rows(student_logits, target_ids, mask)
    return _mean(_token_ce(student_logits[mask], target_ids[mask]))


def soft_label_loss(
    student_label_logits: Tensor,
    teacher_label_logprobs: Tensor,
    *,
    temperature: float = 1.0,
    gold: Tensor | None = None,
    alpha: float = 1.0,
) -> LossParts:
    """Soft-label KD for classification over C label verbalizers.

    student_label_logits (B, C); teacher_label_logprobs (B, C), e.g. the teacher's logprob of
    each verbalizer (need not sum to 1: it is renormalised over the C labels after
    temperature); gold (B,) class indices, -1 where a row has none, or None. kd = mean
    KL(teacher_T || student_T); total = alpha * T^2 * kd + (1 - alpha) * ce, ce the mean CE
    to gold at T = 1 over the rows that have it. Without gold, alpha must be 1 and ce is None.
    """
    _check_unit("alpha", alpha)
    _check_temperature(temperature)
    if student_label_logits.ndim != 2 or student_label_logits.shape != teacher_label_logprobs.shape:
        raise ValueError(
            f"student_label_logits and teacher_label_logprobs must both be (B, C), got "
            f"{tuple(student_label_logits.shape)} and {tuple(teacher_label_logprobs.shape)}"
        )
    if gold is None and alpha != 1.0:
        raise ValueError("alpha < 1 mixes in cross-entropy to gold labels: pass gold, or alpha=1")
    if not bool((teacher_label_logprobs > NEG_INF).any(dim=-1).all()):
        raise ValueError("every row of teacher_label_logprobs needs a label with logprob > -inf")
    if gold is not None and gold.shape != student_label_logits.shape[:1]:
        raise ValueError(f"gold must be (B,), got {tuple(gold.shape)}")
    dtype = _compute_dtype(student_label_logits)
    s = torch.log_softmax(student_label_logits.to(dtype) / temperature, dim=-1)  # (B, C)
    t = torch.log_softmax(teacher_label_logprobs.to(dtype) / temperature, dim=-1)  # (B, C)
    kd = _mean(forward_kl(s, t))
    if gold is None:
        return LossParts(temperature**2 * kd, kd, None)
    known = gold >= 0
    ce = _mean(_token_ce(student_label_logits[known], gold[known]))
    return LossParts(_mix(alpha, temperature**2 * kd, ce), kd, ce)


# --- helpers -----------------------------------------------------------------------------


def _token_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy per row at temperature 1: (M, V), (M,) -> (M,)."""
    if bool(((targets < 0) | (targets >= logits.shape[-1])).any()):
        raise ValueError(
            f"target ids must be in [0, {logits.shape[-1]}) where they count; exclude padding "
            "with the mask rather than -100"
        )
    return F.cross_entropy(logits.to(_compute_dtype(logits)), targets.long(), reduction="none")


def _check_rows(student_logits: Tensor, target_ids: Tensor, mask: Tensor) -> None:
    if student_logits.ndim != 2:
        raise ValueError(
            f"student_logits must be (N, V), got shape {tuple(student_logits.shape)}; "
            "flatten batch and time first, e.g. logits.flatten(0, 1)"
        )
    n = student_logits.shape[0]
    if mask.dtype != torch.bool or mask.shape != (n,):
        raise ValueError(f"mask must be a ({n},) bool tensor, got {mask.dtype} {tuple(mask.shape)}")
    if target_ids.shape != (n,) or target_ids.dtype.is_floating_point:
        raise ValueError(
            f"target_ids must be ({n},) integer, got {target_ids.dtype} {tuple(target_ids.shape)}"
        )


def _mix(alpha: float, kd_term: Tensor, ce: Tensor) -> Tensor:
    # a weight of exactly 0 drops its term: 0 * inf would be NaN
    if alpha == 0.0:
        return ce
    if alpha == 1.0:
        return kd_term
    return alpha * kd_term + (1.0 - alpha) * ce


def _mean(x: Tensor) -> Tensor:
    """Mean over the rows, 0 for none (still attached to the graph, with a zero gradient)."""
    return x.sum() / max(x.numel(), 1)


def _compute_dtype(t: Tensor) -> torch.dtype:
    # float64 stays (gradcheck); bf16, fp16 and fp32 all compute in float32
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature must be a positive finite number (1.0 = unchanged), got {temperature!r}"
        )
