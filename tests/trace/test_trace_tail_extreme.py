"""The null tail at S's largest value, where the saddlepoint runs off to infinity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stillroom.trace.tail import upper_tail


@pytest.mark.parametrize(
    ("n", "sigma", "gamma"),
    [(100, 1.0, 0.25), (100, 2.0, 0.25), (300, 0.5, 0.25), (1000, 2.0, 0.7)],
)
def test_the_bound_at_the_largest_score_is_exact_for_uneven_weights(
    n: int, sigma: float, gamma: float
) -> None:
    # Many weights make lam * s huge; the bound must not lose it to rounding (nor fall
    # below the true tail, which at the top is gamma^(n+) (1 - gamma)^(n-)).
    rng = np.random.default_rng(n)
    c = rng.lognormal(0, sigma, n) * rng.choice([-1.0, 1.0], n, p=[0.3, 0.7])
    top = float(c[c > 0].sum() * (1 - gamma) - c[c < 0].sum() * gamma)
    log_exact = (c > 0).sum() * math.log(gamma) + (c < 0).sum() * math.log(1 - gamma)
    tail = upper_tail(c, top, gamma)
    assert math.log(tail.p_bound) == pytest.approx(log_exact, rel=1e-9)
    assert tail.p_value <= tail.p_bound
