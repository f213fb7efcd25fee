"""Score units against the benign population; the threshold is set by a chosen FPR.

The score asks how far a unit stands *above the ordinary* on what it extracts (features.py
SCORED: answer tokens to private prompts, answer length, answer per prompt, log-prob values,
step-by-step prompts, distinct and exclusive prompts, subjects spanned). Each is
standardised by the population's median and a robust spread (interquartile range, never
below a floor: a difference below the floor is not evidence), only the excess above the
median counts, each excess is capped at CLIP, and the largest one is dropped before the
excesses are summed in quadrature. So no single feature decides: a labeling job that asks
for log-probs, an evaluation harness with step-by-step benchmark items, a summariser with
long answers, each extreme on one thing, stay low; a harvest, which wants long, broad,
exclusive answers (and often their log-probs), is high on several at once.

Why global and not nearest-neighbour: a unit scored against its nearest benign units is
judged by whether its *kind* was in the reference; a customer with a workload the log has
few of (or none, yet) is then novel, and novel is not harvesting. A global one-sided score
only asks "above the ordinary on several extraction features at once", which holds for a
workload nobody designed the score on (benchmarks/audit_detection.py measures this by
leaving each benign workload out of the calibration).

Calibration without labels (`self_calibrate`): the audited population is mostly benign, but
its harvesters sit in the top tail. The screen looks for the widest gap in the top
SCREEN_TOP of scores; if the gap is wide (GAP_MIN, in score units), the units above it are
left out of the reference. The threshold for FPR p is a 90% upper confidence bound on the
reference's (1 - p) quantile (`tail_threshold`), so that the rate holds for benign units
like the reference's with 90% confidence, not merely on average. `warnings` says when the
reference cannot support the rate asked (too few units, or no gap between tail and body).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.audit.catalog import SCORED
from stillroom.errors import InputError

CLIP = 2.0
DROP_TOP = 1  # the largest per-feature excess does not count: no single feature decides
SCREEN_TOP = 0.15  # the screen looks for its gap among the top 15% of scores
GAP_MIN = 0.4  # ... and cuts there only when the gap is at least this wide
ANCHORS = (0.90, 0.99)  # reference quantiles the exponential tail is matched to
CONFIDENCE = 0.9  # the threshold is an upper confidence bound on the (1 - p) quantile
MIN_PER_RATE = 3.0  # the reference should hold 3/p units for rate p to be measured, not guessed

# The smallest spread a feature is standardised by: a difference below it is not evidence
# (a population whose units almost all send only distinct prompts would otherwise make 0.98
# against 1.0 a difference of several spreads).
SCALE_FLOOR = {
    "log_novel_tokens": 0.3,
    "log_novel_answer": 0.15,
    "log_novel_ratio": 0.15,
    "log_logprob_values": 0.3,
    "frac_cot": 0.25,
    "prompt_uniqueness": 0.15,
    "prompt_exclusivity": 0.15,
    "lexical_breadth": 0.1,
}


@dataclass
class Calibration:
    features: list[str]
    center: np.ndarray  # (F,) median of each feature
    scale: np.ndarray  # (F,) robust spread, floored
    ref_scores: np.ndarray  # (B,) scores of the reference units
    percentiles: dict[str, list[float]]  # feature -> benign [p50, p90, p99] (raw units)
    screened_out: int = 0  # units the screen left out of the reference
    gap: float | None = None  # the screen's gap (score units); None: no cut was made
    notes: list[str] = field(default_factory=list)

    def threshold(self, fpr: float) -> float:
        if not 0 < fpr < 1:
            raise InputError(f"--fpr {fpr}: give a false-positive rate between 0 and 1")
        return tail_threshold(self.ref_scores, fpr)

    def warnings(self, fpr: float) -> list[str]:
        """Why the measured rate may differ from `fpr` on this log, in plain words."""
        out = list(self.notes)
        n = len(self.ref_scores)
        if n < MIN_PER_RATE / fpr:
            out.append(
                f"the reference has {n:,} units, fewer than the {MIN_PER_RATE / fpr:,.0f} a "
                f"rate of {fpr:g} needs to be measured; the threshold extrapolates its tail, "
                "so the rate is an estimate: audit a longer window, or calibrate on a larger "
                "known-benign log (--calibrate)"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 2,
            "features": self.features,
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "ref_scores": self.ref_scores.tolist(),
            "percentiles": self.percentiles,
            "screened_out": self.screened_out,
            "gap": self.gap,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        if d.get("version") != 2:
            raise InputError(
                "the saved calibration was made by an earlier audit whose score differs; "
                "make a new one with --save-calibration"
            )
        return cls(
            d["features"],
            np.array(d["center"]),
            np.array(d["scale"]),
            np.array(d["ref_scores"]),
            d["percentiles"],
            int(d.get("screened_out", 0)),
            d.get("gap"),
            list(d.get("notes", [])),
        )

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(path)


def matrix(units: list[dict[str, Any]], features: list[str]) -> np.ndarray:
    """(U, F) raw feature values; missing values count as 0 (the unsuspicious end)."""
    return np.array([[float(u.get(f) or 0.0) for f in features] for u in units], dtype=np.float64)


def tail_threshold(scores: np.ndarray, fpr: float) -> float:
    """A threshold that benign units pass at most `fpr` of the time, with CONFIDENCE, when
    they are like the reference `scores`: the reference score with k scores above it, k the
    largest count such that a (1 - fpr) quantile would have more than k above it with that
    confidence (the number above is Binomial(n, fpr)). Where the reference is too small for
    any of its scores to be that bound, its tail past the 99th percentile is extrapolated by
    an exponential matched to the ANCHORS quantiles (never below the highest score)."""
    from scipy.stats import binom

    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]  # descending
    n = len(s)
    if n == 0:
        return math.inf
    k = int(binom.ppf(1 - CONFIDENCE, n, fpr)) - 1  # P(X <= k) <= 1 - CONFIDENCE
    while k >= 0 and binom.cdf(k, n, fpr) > 1 - CONFIDENCE:
        k -= 1
    if k >= 0:
        return float(s[k])
    lo, hi = ANCHORS
    if n < 20:
        return float(s[0])
    qa, qb = np.quantile(s, [lo, hi])
    rate = math.log((1 - lo) / (1 - hi)) / max(float(qb - qa), 1e-9)
    return max(float(s[0]), float(qa) + math.log((1 - lo) / fpr) / rate)


def _excess(cal: Calibration, x: np.ndarray) -> np.ndarray:
    """(U, F) squared excess of raw features `x` above the centre, capped, largest dropped."""
    e = np.clip((x - cal.center) / cal.scale, 0.0, CLIP) ** 2
    if DROP_TOP and e.shape[1] > DROP_TOP:
        top = np.argsort(-e, axis=1)[:, :DROP_TOP]
        np.put_along_axis(e, top, 0.0, axis=1)
    return e


def score(cal: Calibration, units: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(scores (U,), per-feature contributions (U, F)) of units against the calibration."""
    if not units:
        return np.zeros(0), np.zeros((0, len(cal.features)))
    e = _excess(cal, matrix(units, cal.features))
    return np.sqrt(e.sum(1)), e


def _centre(units: list[dict[str, Any]], feats: list[str]) -> Calibration:
    if len(units) < 10:
        raise InputError(
            f"calibration needs at least 10 benign units, got {len(units)}; audit a longer "
            "window or give --calibrate a larger benign log"
        )
    x = matrix(units, feats)
    q25, q50, q75 = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
    floor = np.array([SCALE_FLOOR.get(f, 1e-3) for f in feats])
    pct = {f: np.quantile(x[:, i], [0.5, 0.9, 0.99]).tolist() for i, f in enumerate(feats)}
    return Calibration(feats, q50, np.maximum((q75 - q25) / 1.349, floor), np.zeros(0), pct)


def fit(units: list[dict[str, Any]], features: list[str] | None = None) -> Calibration:
    """A calibration from units believed benign (a known-benign log): every one is reference."""
    cal = _centre(units, list(features or SCORED))
    cal.ref_scores = score(cal, units)[0]
    return cal


def self_calibrate(units: list[dict[str, Any]], features: list[str] | None = None) -> Calibration:
    """No labels: calibrate on the audited population itself, leaving out the units above
    the widest gap in its top tail (module docstring)."""
    cal = _centre(units, list(features or SCORED))
    s = score(cal, units)[0]
    order = np.sort(s)[::-1]  # descending
    top = max(1, int(SCREEN_TOP * len(order)))
    gaps = order[:top] - order[1 : top + 1]
    i = int(np.argmax(gaps)) if len(gaps) else 0
    if len(gaps) and gaps[i] >= GAP_MIN:
        cut = order[i + 1]
        cal.ref_scores = s[s <= cut]
        cal.screened_out = int((s > cut).sum())
        cal.gap = float(gaps[i])
        cal.percentiles = _percentiles(units, cal.features, s <= cut)
    else:
        cal.ref_scores = s
        cal.notes.append(
            "no gap separates this log's highest scores from the rest, so the reference may "
            "hold harvesters and the threshold sits higher than the rate asked implies: "
            "fewer flags, not more; calibrate on a known-benign log (--calibrate) to be sure"
        )
    return cal


def _percentiles(
    units: list[dict[str, Any]], feats: list[str], keep: np.ndarray
) -> dict[str, list[float]]:
    x = matrix([u for u, k in zip(units, keep.tolist(), strict=True) if k], feats)
    return {f: np.quantile(x[:, i], [0.5, 0.9, 0.99]).tolist() for i, f in enumerate(feats)}
