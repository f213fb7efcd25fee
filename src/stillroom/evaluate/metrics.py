"""Quality metrics: accuracy and macro-F1 for labels, confusion matrices, agreement and KL;
exact match and chrF for text."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

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


def chrf(hyp: str, ref: str, *, order: int = CHRF_ORDER, beta: float = CHRF_BETA) -> float:
    """Sentence-level chrF of one hypothesis against one reference, 0-100; 100 for two
    strings that are both empty (or whitespace only): identical answers."""
    return corpus_chrf([hyp], [ref], order=order, beta=beta)


def corpus_chrf(
    hyps: Sequence[str], refs: Sequence[str], *, order: int = CHRF_ORDER, beta: float = CHRF_BETA
) -> float:
    """Corpus-level chrF, 0-100: sacreBLEU's `CHRF` (Popović 2015; character n-grams up to
    `order`, whitespace removed, counts summed over pairs, then one score), with one
    exception: if every pair is two empty strings the answers are identical and score 100,
    where sacreBLEU gives 0. No pairs give 0."""
    pairs = _pairs(hyps, refs)
    if not pairs:
        return 0.0
    if all(not h.split() and not r.split() for h, r in pairs):
        return 100.0
    scorer = _chrf_scorer(order, beta)
    return float(scorer.corpus_score([h for h, _ in pairs], [[r for _, r in pairs]]).score)


@functools.cache
def _chrf_scorer(order: int, beta: float) -> Any:
    # Imported on first use: sacreBLEU loads every metric it has, which `eval` alone needs.
    from sacrebleu.metrics import CHRF

    # Typed int there, but only squared: a float beta scores as the formula says.
    return CHRF(char_order=order, word_order=0, beta=beta)  # type: ignore[arg-type]


def _pairs(hyps: Sequence[str], refs: Sequence[str]) -> list[tuple[str, str]]:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references; pair them up")
    return list(zip(hyps, refs, strict=True))
