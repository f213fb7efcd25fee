"""Score units against the benign population; the threshold is set by a chosen FPR.

A unit's score is its *one-sided* distance to the benign population: for a benign reference
unit b, d(x, b) = sqrt(sum_f min(2, max(0, z_f(x) - z_f(b)))^2) over standardised features
oriented so that higher looks more like harvesting, and the score is the distance to the
k-th nearest reference unit. A unit that some benign units match or exceed on every feature
scores 0; being extreme on one feature counts at most 2 (no single feature decides), so a
high score needs a combination no benign unit shows, which is what separates an enterprise
batch pipeline (high volume, templated, regular) or a benchmark evaluator (log-probs, n > 1,
broad, step-by-step) from a harvester.

Calibration: leave-one-out scores of the reference units; the threshold for FPR p is their
(1 - p) quantile, extrapolated past the data by an exponential fit to the top 10% (a
peaks-over-threshold tail), so --fpr 0.001 works with a few hundred reference units.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.audit.features import SCORED
from stillroom.errors import InputError

CLIP = 2.0
K = 3
TAIL = 0.10


@dataclass
class Calibration:
    features: list[str]
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    ref: np.ndarray  # (B, F) standardised reference units
    ref_scores: np.ndarray  # (B,) leave-one-out
    percentiles: dict[str, list[float]]  # feature -> benign [p50, p90, p99] (raw units)

    def threshold(self, fpr: float) -> float:
        if not 0 < fpr < 1:
            raise InputError(f"--fpr {fpr}: give a false-positive rate between 0 and 1")
        s = np.sort(self.ref_scores)
        if fpr >= TAIL or len(s) < 20:
            return float(np.quantile(s, 1 - fpr))
        t0 = float(np.quantile(s, 1 - TAIL))
        excess = s[s > t0] - t0
        beta = float(excess.mean()) if excess.size else 1e-6
        return t0 + max(beta, 1e-6) * math.log(TAIL / fpr)

    def to_json(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "ref": self.ref.tolist(),
            "ref_scores": self.ref_scores.tolist(),
            "percentiles": self.percentiles,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        return cls(
            d["features"],
            np.array(d["mean"]),
            np.array(d["scale"]),
            np.array(d["ref"]).reshape(-1, len(d["features"])),
            np.array(d["ref_scores"]),
            d["percentiles"],
        )

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(path)


def matrix(units: list[dict[str, Any]], features: list[str]) -> np.ndarray:
    """(U, F) raw feature values; missing values count as 0 (the unsuspicious end)."""
    return np.array([[float(u.get(f) or 0.0) for f in features] for u in units], dtype=np.float64)


def fit(units: list[dict[str, Any]], features: list[str] | None = None) -> Calibration:
    """A calibration from units believed benign."""
    feats = list(features or SCORED)
    if len(units) < 10:
        raise InputError(
            f"calibration needs at least 10 benign units, got {len(units)}; audit a longer "
            "window or give --calibrate a larger benign log"
        )
    x = matrix(units, feats)
    mean = x.mean(0)
    scale = np.maximum(x.std(0), 1e-3)
    ref = (x - mean) / scale
    pct = {f: np.quantile(x[:, i], [0.5, 0.9, 0.99]).tolist() for i, f in enumerate(feats)}
    cal = Calibration(feats, mean, scale, ref, np.zeros(len(ref)), pct)
    cal.ref_scores = _scores(cal, ref, leave_one_out=True)[0]
    return cal


def _scores(
    cal: Calibration, z: np.ndarray, leave_one_out: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (U,), per-feature contributions (U, F)) of standardised units z."""
    scores = np.zeros(len(z))
    contrib = np.zeros_like(z)
    k = min(K, len(cal.ref) - (1 if leave_one_out else 0))
    for s in range(0, len(z), 256):
        block = z[s : s + 256]  # (b, F)
        excess = np.clip(block[:, None, :] - cal.ref[None, :, :], 0.0, CLIP) ** 2  # (b, B, F)
        d = np.sqrt(excess.sum(-1))  # (b, B)
        if leave_one_out:
            idx = np.arange(s, s + len(block))
            d[np.arange(len(block)), idx] = np.inf
        near = np.argpartition(d, k - 1, axis=1)[:, :k]  # (b, k)
        scores[s : s + len(block)] = np.take_along_axis(d, near, 1).max(1)
        contrib[s : s + len(block)] = np.take_along_axis(excess, near[:, :, None], 1).mean(1)
    return scores, contrib


def score(cal: Calibration, units: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(scores (U,), contributions (U, F)) of units against the calibration."""
    if not units:
        return np.zeros(0), np.zeros((0, len(cal.features)))
    z = (matrix(units, cal.features) - cal.mean) / cal.scale
    return _scores(cal, z)


def self_calibrate(units: list[dict[str, Any]], trim: float = 0.05) -> Calibration:
    """No benign reference given: the population is mostly benign, so fit on it, drop the
    most suspicious `trim` share (they would vouch for each other), and fit again."""
    cal = fit(units)
    s, _ = score(cal, units)
    keep = s <= np.quantile(s, 1 - trim)
    return fit([u for u, k in zip(units, keep.tolist(), strict=True) if k])
