"""Quality metrics: accuracy and macro-F1 for labels, confusion matrices, agreement and KL;
exact match and chrF for text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean()) if len(gold) else 0.0


def confusion(pred: np.ndarray, gold: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: rows are gold classes, columns predictions."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (gold, pred), 1)
    return out


def macro_f1(pred: np.ndarray, gold: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes present in gold or predictions."""
    m = confusion(pred, gold, n_classes)
    tp = np.diag(m).astype(float)
    precision = np.divide(tp, m.sum(0), out=np.zeros_like(tp), where=m.sum(0) > 0)
    recall = np.divide(tp, m.sum(1), out=np.zeros_like(tp), where=m.sum(1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    seen = (m.sum(0) + m.sum(1)) > 0
    return float(f1[seen].mean()) if seen.any() else 0.0


def label_kl(teacher_logp: np.ndarray, student_logp: np.ndarray) -> float:
    """Mean KL(teacher || student) over items, both (N, C) log-probs normalised over labels."""
    p = _normalise(teacher_logp)
    q = _normalise(student_logp)
    return float((np.exp(p) * (p - q)).sum(axis=1).mean())


def _normalise(logp: np.ndarray) -> np.ndarray:
    m = logp.max(axis=1, keepdims=True)
    return logp - (m + np.log(np.exp(logp - m).sum(axis=1, keepdims=True)))


# --- text: exact match and chrF ---------------------------------------------------------


def normalise_whitespace(text: str) -> str:
    """Strip both ends and collapse every run of whitespace (str.split's: spaces, tabs,
    newlines, Unicode spaces) to one space. Case and punctuation are kept."""
    return " ".join(text.split())


def exact_match(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Share of pairs equal after `normalise_whitespace`; 0 for no pairs."""
    pairs = _pairs(hyps, refs)
    if not pairs:
        return 0.0
    same = sum(normalise_whitespace(h) == normalise_whitespace(r) for h, r in pairs)
    return same / len(pairs)


CHRF_ORDER = 6
CHRF_BETA = 2.0


def chrf_stats(hyp: str, ref: str, order: int = CHRF_ORDER) -> np.ndarray:
    """(order, 3) int64: per n-gram order n = 1..order, the hypothesis's character n-grams,
    the reference's, and the matches (each n-gram counted at most as often as in both).
    Whitespace is removed before n-grams are taken, as in Popović 2015."""
    h, r = "".join(hyp.split()), "".join(ref.split())
    out = np.zeros((order, 3), dtype=np.int64)
    for n in range(1, order + 1):
        hc, rc = _char_ngrams(h, n), _char_ngrams(r, n)
        out[n - 1] = (sum(hc.values()), sum(rc.values()), sum((hc & rc).values()))
    return out


def chrf_score(stats: np.ndarray, beta: float = CHRF_BETA) -> float:
    """chrF from (summed) `chrf_stats`, on a 0-100 scale.

    Popović 2015: chrP and chrR are the arithmetic means over n of the n-gram precision and
    recall, and chrF_beta = (1 + beta^2) chrP chrR / (beta^2 chrP + chrR). An order where
    either side has no n-grams (a string shorter than n) is left out of both means, as
    sacreBLEU does; with no order left the score is 0 (two empty strings are the callers'
    case: `chrf` and `corpus_chrf` score them 100).
    """
    hyp_n, ref_n, match = (stats[:, i].astype(float) for i in range(3))
    both = (hyp_n > 0) & (ref_n > 0)
    if not both.any():
        return 0.0
    precision = float((match[both] / hyp_n[both]).mean())
    recall = float((match[both] / ref_n[both]).mean())
    if precision + recall == 0:
        return 0.0
    b2 = beta**2
    return 100 * (1 + b2) * precision * recall / (b2 * precision + recall)


def chrf(hyp: str, ref: str, *, order: int = CHRF_ORDER, beta: float = CHRF_BETA) -> float:
    """Sentence-level chrF of one hypothesis against one reference, 0-100; 100 for two
    strings that are both empty (or whitespace only): identical answers."""
    return corpus_chrf([hyp], [ref], order=order, beta=beta)


def corpus_chrf(
    hyps: Sequence[str], refs: Sequence[str], *, order: int = CHRF_ORDER, beta: float = CHRF_BETA
) -> float:
    """Corpus-level chrF, 0-100, as sacreBLEU's corpus_score (identical to it but for two
    empty strings): n-gram counts summed over pairs, then one score. A hypothesis's n-grams
    of an order its reference is too short to have are not counted against its precision.
    Pairs of two empty strings add nothing; if every pair is one, the score is 100. No
    pairs give 0."""
    pairs = _pairs(hyps, refs)
    if not pairs:
        return 0.0
    stats = [chrf_stats(h, r, order) for h, r in pairs]  # each (order, 3)
    if all(not s.any() for s in stats):
        return 100.0
    total = np.zeros((order, 3), np.int64)
    for s in stats:
        counted = s.copy()
        counted[counted[:, 1] == 0, 0] = 0  # no reference n-grams of that order
        total += counted
    return chrf_score(total, beta)


def _char_ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def _pairs(hyps: Sequence[str], refs: Sequence[str]) -> list[tuple[str, str]]:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references; pair them up")
    return list(zip(hyps, refs, strict=True))
