"""Upper tail of S = sum_i c_i (B_i - gamma) for independent B_i ~ Bernoulli(gamma).

This is the null distribution of the green-mass score (`stillroom.trace.mass`): the weights
c_i are fixed by the models and texts, and only the key's green bits B_i are random. With
many weights no single one dominates and S is close to normal, but the tail a verdict needs
(p = 1e-6) is where a normal approximation is least trustworthy, so two figures come from the
exact cumulant generating function K(l) = sum_i [log(1 - gamma + gamma e^(l c_i)) - l gamma c_i]:

- the saddlepoint approximation of Lugannani and Rice (1980), accurate to a small relative
  error far into the tail for sums of many independent terms: the reported p-value;
- the Chernoff bound exp(min_l K(l) - l s), never below the true tail: a guarantee that
  holds with no approximation at all, only looser (it ignores a factor about 1/(z sqrt(2 pi))).

`choice_tail` gives the same two figures for a sum of independent uniform choices, each among
its own row of values: the null of the served-answer test (`stillroom.trace.served`) when each
served answer has several twins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import norm


@dataclass(frozen=True)
class Tail:
    z: float  # s / sd(S)
    p_value: float  # saddlepoint approximation of P(S >= s)
    p_bound: float  # Chernoff bound: P(S >= s) <= p_bound, exactly


def _cgf(c: np.ndarray, lam: float, gamma: float) -> tuple[float, float, float]:
    """K(lam), K'(lam), K''(lam) of S."""
    x = lam * c
    log_mgf = np.logaddexp(math.log1p(-gamma), math.log(gamma) + x) - gamma * x
    pi = expit(x + math.log(gamma / (1 - gamma)))  # P(B = 1) under the tilted law
    return (
        float(log_mgf.sum()),
        float((c * (pi - gamma)).sum()),
        float((c * c * pi * (1 - pi)).sum()),
    )


def upper_tail(c: np.ndarray, s: float, gamma: float) -> Tail:
    """P(S >= s): z-score, saddlepoint p-value and Chernoff bound."""
    c = np.asarray(c, dtype=np.float64)
    c = c[c != 0]
    var = gamma * (1 - gamma) * float((c * c).sum())
    if var == 0:
        return Tail(0.0, 1.0 if s <= 0 else 0.0, 1.0 if s <= 0 else 0.0)
    z = s / math.sqrt(var)
    if z <= 0:  # no evidence: the tail holds at least about half the mass
        return Tail(z, float(norm.sf(z)), 1.0)
    top = float(c[c > 0].sum() * (1 - gamma) - c[c < 0].sum() * gamma)  # S's largest value
    if s > top:
        return Tail(z, 0.0, 0.0)
    lam = _saddlepoint(lambda x: _cgf(c, x, gamma)[1], s, 1.0 / math.sqrt(var), cap=1e12)
    exponent = _log_chernoff(c, lam, gamma, top - s)  # <= 0
    return _lugannani_rice(z, exponent, lam, _cgf(c, lam, gamma)[2], math.exp(min(exponent, 0.0)))


def _lugannani_rice(z: float, exponent: float, lam: float, k2: float, bound: float) -> Tail:
    """The saddlepoint p-value from K(lam) - lam s (`exponent`, <= 0) and K''(lam), kept at
    or below the Chernoff `bound`."""
    w = math.sqrt(max(-2.0 * exponent, 0.0))
    u = lam * math.sqrt(max(k2, 0.0))
    if w < 1e-3 or u < 1e-3:
        # Near the centre Lugannani-Rice divides 0 by 0: use the normal. At S's largest
        # value (every sign agreeing) the tilted law is a point mass, the bound is exact and
        # the normal far too large: the smaller of the two is right in both places.
        return Tail(z, min(float(norm.sf(z)), bound), bound)
    p = float(norm.sf(w) + norm.pdf(w) * (1 / u - 1 / w))
    return Tail(z, min(max(p, 0.0), bound), bound)


def _log_chernoff(c: np.ndarray, lam: float, gamma: float, slack: float) -> float:
    """K(lam) - lam s for s = top - slack, as lam slack + sum_i log(q_i + (1 - q_i) e^(-lam |c_i|))
    with q_i the chance of term i's largest value: the same sum as K's, but with the terms
    that grow like lam (and would cancel against lam s) taken out, so a large lam near S's
    largest value loses no precision and the bound stays above the true tail."""
    q = np.where(c > 0, gamma, 1 - gamma)
    return lam * slack + float(np.log1p((1 - q) * np.expm1(-lam * np.abs(c))).sum())


def _saddlepoint(k_prime: Callable[[float], float], s: float, start: float, *, cap: float) -> float:
    """The lam where K'(lam) = s. K' rises from 0 (at lam = 0) towards S's largest value:
    double `start` until it brackets the root, then solve by Brent's method. Past `cap`, s
    is S's largest value and the root is at infinity: `cap` stands in for it."""
    lo, hi = 0.0, start
    while k_prime(hi) < s:
        lo, hi = hi, hi * 2
        if hi > cap:
            return hi
    return float(brentq(lambda lam: k_prime(lam) - s, lo, hi, xtol=1e-14 * hi))


EXACT_UP_TO = 1 << 16  # choice_tail enumerates every assignment up to this many


def choice_tail(values: np.ndarray) -> Tail:
    """P(S >= observed) for S = sum_i X_i, each X_i drawn uniformly and independently from
    row i of `values` (n x m), the observed draw being each row's first entry: the null of a
    randomization test in which any of a row's m entries could have been the real one. For
    m = 2 it is `upper_tail` with gamma = 1/2 on the rows' differences. Rows whose entries
    are all equal carry no evidence and are left out. With at most `EXACT_UP_TO`
    assignments, the tail is counted exactly (p-value and bound alike)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.ptp(v, axis=1) > 0]
    if v.size == 0:
        return Tail(0.0, 1.0, 1.0)
    n, m = v.shape
    c = v - v.mean(axis=1, keepdims=True)
    s, top = float(c[:, 0].sum()), float(c.max(axis=1).sum())
    z = s / math.sqrt(float((c * c).mean(axis=1).sum()))
    at_top = c[:, 0] >= c.max(axis=1)
    if at_top.all():  # the observed draw is every row's largest: S's largest value
        exact = float(np.prod((c == c.max(axis=1, keepdims=True)).sum(axis=1) / m))
        return Tail(z, exact, exact)
    if m**n <= EXACT_UP_TO:
        sums = np.zeros(1)
        for row in c:
            sums = (sums[:, None] + row[None, :]).ravel()
        # The observed sum, computed as each assignment's: ties count as reached.
        exact = float(np.mean(sums >= s - 1e-12 * (np.abs(c).sum() + 1)))
        return Tail(z, exact, exact)
    return _choice_saddlepoint(c, s, top, z)


def _choice_saddlepoint(c: np.ndarray, s: float, top: float, z: float) -> Tail:
    """Saddlepoint p-value and Chernoff bound of `choice_tail`, on centred rows `c`."""
    shifted = c - c.max(axis=1, keepdims=True)  # <= 0, so the exponentials never overflow
    log_m = math.log(c.shape[1])

    def moments(lam: float) -> tuple[float, float, float]:
        """K(lam) - lam top, K'(lam), K''(lam)."""
        w = np.exp(lam * shifted)
        total = w.sum(axis=1)
        pi = w / total[:, None]  # each row's tilted law
        mean = (pi * c).sum(axis=1)
        second = (pi * c * c).sum(axis=1)
        k0 = float((np.log(total) - log_m).sum())
        return k0, float(mean.sum()), float((second - mean**2).sum())

    if z <= 0 or moments(0.0)[1] >= s:  # no evidence (K'(0) is 0 up to rounding)
        return Tail(z, float(norm.sf(z)), 1.0)
    start = z / s  # 1 / sd(S)
    lam = _saddlepoint(lambda x: moments(x)[1], s, start, cap=1e12 * start)
    k0, _, k2 = moments(lam)
    exponent = min(k0 + lam * (top - s), 0.0)  # K(lam) - lam s, computed without cancelling
    # A hair above exp(exponent), so that rounding in the sums never puts it below the tail.
    return _lugannani_rice(z, exponent, lam, k2, min(math.exp(exponent) * (1 + 1e-9), 1.0))
