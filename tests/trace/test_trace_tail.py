"""The null tail of the green-mass score against exact and simulated tails."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from stillroom.trace.tail import upper_tail

GAMMA = 0.25


@pytest.mark.parametrize("n, green", [(400, 130), (400, 150), (2000, 620)])
def test_equal_weights_match_the_exact_binomial(n: int, green: int) -> None:
    # With every weight 1, S = X - gamma n for X ~ Binomial(n, gamma): the tail is exact.
    exact = float(binom.sf(green - 1, n, GAMMA))
    tail = upper_tail(np.ones(n), green - GAMMA * n, GAMMA)
    assert tail.p_bound >= exact  # a bound, always
    # The saddlepoint treats the lattice as continuous: within a factor, far into the tail.
    assert exact / 3 < tail.p_value < exact * 3, (tail, exact)


def test_uneven_weights_match_simulation() -> None:
    rng = np.random.default_rng(0)
    c = rng.lognormal(0, 1.0, 3000) * rng.choice([-1.0, 1.0], 3000, p=[0.3, 0.7])
    sd = np.sqrt(GAMMA * (1 - GAMMA) * (c * c).sum())
    draws = np.empty(400_000)
    for i in range(0, len(draws), 20_000):
        bits = rng.random((20_000, len(c))) < GAMMA
        draws[i : i + 20_000] = (bits - GAMMA) @ c
    for z in (2.0, 3.0, 3.5):
        simulated = float((draws >= z * sd).mean())
        tail = upper_tail(c, z * sd, GAMMA)
        assert abs(tail.z - z) < 1e-9
        assert tail.p_bound >= simulated
        spread = 4 * np.sqrt(simulated / len(draws))  # simulation error, 4 standard errors
        assert abs(tail.p_value - simulated) < 0.05 * simulated + spread, (z, tail, simulated)


def test_no_evidence_and_impossible_scores() -> None:
    c = np.array([1.0, 2.0, -0.5, 0.0])
    low = upper_tail(c, -0.3, GAMMA)
    assert low.z < 0 and low.p_value > 0.5 and low.p_bound == 1.0
    top = (1 - GAMMA) * 3.0 + GAMMA * 0.5  # every positive weight green, the negative red
    assert upper_tail(c, top + 1e-6, GAMMA).p_value == 0.0
    assert upper_tail(np.zeros(3), 0.0, GAMMA).p_value == 1.0


def test_the_largest_score_gets_its_exact_probability() -> None:
    # Every sign agreeing: P(S >= top) is gamma^(n+) (1 - gamma)^(n-), far below the normal.
    rng = np.random.default_rng(1)
    c = rng.lognormal(0, 0.5, 96)
    exact = 0.5**96
    tail = upper_tail(c, 0.5 * c.sum(), 0.5)
    assert tail.p_value <= tail.p_bound
    assert exact * (1 - 1e-9) <= tail.p_bound < exact * 1.01
