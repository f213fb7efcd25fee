"""Quality metrics: accuracy and macro-F1 for labels, confusion matrices, agreement and KL."""

from __future__ import annotations

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
