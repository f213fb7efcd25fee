"""Score units against the benign population; the threshold is set by a chosen FPR.

A unit's score is its *one-sided* distance to the benign population: for a benign reference
unit b, d(x, b) = sqrt(sum_f min(2, max(0, z_f(x) - z_f(b)))^2) over standardised features
oriented so that higher looks more like harvesting, and the score is the distance to the
k-th nearest reference unit. A unit that k benign units match or exceed on every feature
scores 0; being extreme on one feature counts at most 2 (no single feature decides), so a
high score needs a combination no benign unit shows, which is what separates an enterprise
batch pipeline (high volume, templated, regular) or a benchmark evaluator (log-probs, n > 1,
broad, step-by-step, prompts that other accounts send too) from a harvester.

Calibration without labels (`self_calibrate`): the audited population is mostly benign, but
its harvesters would vouch for each other (a strategy's accounts look alike), so a robust
screen first scores every unit against its 20th nearest neighbour (more than any one
strategy's accounts in a log of this size) and drops the units past that screen's 1%
threshold; the reference is what remains, scored with k = 5.

Threshold for FPR p: the (1 - p) quantile of the reference's leave-one-out scores, its tail
beyond the data extrapolated by an exponential matched to the 90th and 99th percentiles (so
--fpr 0.001 works with a few hundred reference units), and never below the empirical
quantile: an exponential over-states a light tail, so the threshold errs towards fewer flags.
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
K = 5  # neighbours in the final score
K_SCREEN = 20  # neighbours in the robust screen: more than one strategy's accounts
SCREEN_FPR = 0.01  # the screen drops units past this threshold before the final fit
SCREEN_TRIM = 0.05  # the screen's own reference leaves out the top 5% first
ANCHORS = (0.90, 0.99)  # reference quantiles the exponential tail is matched to


@dataclass
class Calibration:
    features: list[str]
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    ref: np.ndarray  # (B, F) standardised reference units
    ref_scores: np.ndarray  # (B,) leave-one-out
    percentiles: dict[str, list[float]]  # feature -> benign [p50, p90, p99] (raw units)

    k: int = K
    screened_out: int = 0  # units the robust screen left out of the reference

    def threshold(self, fpr: float) -> float:
        if not 0 < fpr < 1:
            raise InputError(f"--fpr {fpr}: give a false-positive rate between 0 and 1")
        return tail_threshold(self.ref_scores, fpr)

    def to_json(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "ref": self.ref.tolist(),
            "ref_scores": self.ref_scores.tolist(),
            "percentiles": self.percentiles,
            "k": self.k,
            "screened_out": self.screened_out,
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
            int(d.get("k", K)),
            int(d.get("screened_out", 0)),
        )

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(path)


def matrix(units: list[dict[str, Any]], features: list[str]) -> np.ndarray:
    """(U, F) raw feature values; missing values count as 0 (the unsuspicious end)."""
    return np.array([[float(u.get(f) or 0.0) for f in features] for u in units], dtype=np.float64)


def tail_threshold(scores: np.ndarray, fpr: float) -> float:
    """The (1 - fpr) quantile of `scores`, its tail past the 99th percentile extrapolated by
    an exponential matched to the ANCHORS quantiles, never below the empirical quantile."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    empirical = float(np.quantile(s, 1 - fpr))
    lo, hi = ANCHORS
    if len(s) < 20 or fpr >= 1 - hi:
        return empirical
    qa, qb = np.quantile(s, [lo, hi])
    rate = math.log((1 - lo) / (1 - hi)) / max(float(qb - qa), 1e-9)
    return max(empirical, float(qa) + math.log((1 - lo) / fpr) / rate)


def _pot_threshold(scores: np.ndarray, fpr: float, tail: float = 0.10) -> float:
    """The screen's cut: an exponential fitted to the top `tail` of scores (peaks over
    threshold), extrapolated to `fpr`; generous, so the screen drops few benign units."""
    t0 = float(np.quantile(scores, 1 - tail))
    excess = scores[scores > t0] - t0
    beta = float(excess.mean()) if excess.size else 1e-6
    return t0 + max(beta, 1e-6) * math.log(tail / fpr)


def fit(units: list[dict[str, Any]], features: list[str] | None = None, k: int = K) -> Calibration:
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
    cal = Calibration(feats, mean, scale, ref, np.zeros(len(ref)), pct, k)
    cal.ref_scores = _scores(cal, ref, leave_one_out=True)[0]
    return cal


def _scores(
    cal: Calibration, z: np.ndarray, leave_one_out: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (U,), per-feature contributions (U, F)) of standardised units z."""
    scores = np.zeros(len(z))
    contrib = np.zeros_like(z)
    k = min(cal.k, len(cal.ref) - 1)
    ref = cal.ref.astype(np.float32)
    own = {} if leave_one_out else {row.tobytes(): i for i, row in enumerate(cal.ref)}
    for s in range(0, len(z), 512):
        block = z[s : s + 512]  # (b, F)
        b32 = block.astype(np.float32)
        d2 = np.zeros((len(block), len(ref)), dtype=np.float32)  # (b, B)
        for f in range(ref.shape[1]):  # one feature at a time: no (b, B, F) array
            e = np.clip(b32[:, f, None] - ref[None, :, f], 0.0, CLIP)
            d2 += e * e
        rows = np.arange(len(block))
        if leave_one_out:
            d2[rows, np.arange(s, s + len(block))] = np.inf
        else:  # a unit that is itself in the reference does not vouch for itself
            for r, x in enumerate(block):
                i = own.get(x.tobytes())
                if i is not None:
                    d2[r, i] = np.inf
        near = np.argpartition(d2, k - 1, axis=1)[:, :k]  # (b, k)
        excess = np.clip(block[:, None, :] - cal.ref[near], 0.0, CLIP) ** 2  # (b, k, F)
        scores[s : s + len(block)] = np.sqrt(excess.sum(-1)).max(1)
        contrib[s : s + len(block)] = excess.mean(1)
    return scores, contrib


def score(cal: Calibration, units: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(scores (U,), contributions (U, F)) of units against the calibration."""
    if not units:
        return np.zeros(0), np.zeros((0, len(cal.features)))
    z = (matrix(units, cal.features) - cal.mean) / cal.scale
    return _scores(cal, z)


def self_calibrate(units: list[dict[str, Any]], features: list[str] | None = None) -> Calibration:
    """No labels: calibrate on the audited population itself, after a robust screen (module
    docstring) has left out the units its harvesters would otherwise vouch for."""
    if len(units) < 10:
        return fit(units, features)  # raises with the fix
    first = fit(units, features, k=K_SCREEN)
    kept = first.ref_scores <= np.quantile(first.ref_scores, 1 - SCREEN_TRIM)
    inner = [u for u, keep in zip(units, kept.tolist(), strict=True) if keep]
    screen = fit(inner, first.features, k=K_SCREEN) if len(inner) >= 10 else first
    s = _screen_scores(screen, units, kept if screen is not first else None)
    ok = s <= _pot_threshold(screen.ref_scores, SCREEN_FPR)
    cal = fit([u for u, keep in zip(units, ok.tolist(), strict=True) if keep], first.features)
    cal.screened_out = int((~ok).sum())
    return cal


def _screen_scores(
    screen: Calibration, units: list[dict[str, Any]], in_ref: np.ndarray | None
) -> np.ndarray:
    """Every unit's screen score: leave-one-out for the screen's own reference units."""
    if in_ref is None:
        return screen.ref_scores
    s, _ = score(screen, units)
    s[in_ref] = screen.ref_scores
    return s
