import random

import pytest

from stillroom.config import CostConfig
from stillroom.errors import ConfigError
from stillroom.harvest.cost import Budget, worst_case_cost
from stillroom.prices import Price, price_for
from stillroom.teachers.base import GenerationParams, TeacherRequest
from stillroom.teachers.estimates import input_tokens_upper_bound


def test_price_lookup_override_and_local() -> None:
    assert price_for("gpt-4o-mini-2024-07-18", "api", CostConfig()) == Price(0.15, 0.60)
    assert price_for("gpt-4o", "api", CostConfig()) == Price(2.5, 10.0)
    assert price_for("gemma-3-270m", "local", CostConfig()).free
    override = CostConfig(input_per_1m=1.0, output_per_1m=2.0)
    assert price_for("anything", "api", override) == Price(1.0, 2.0)


def test_unknown_model_with_budget_names_the_keys_to_set() -> None:
    with pytest.raises(ConfigError, match=r"cost.input_per_1m and cost.output_per_1m"):
        price_for("my-vllm-model", "api", CostConfig(budget_usd=1.0))


def test_input_bound_is_never_below_bytes() -> None:
    req = TeacherRequest(messages=(("system", "é" * 10), ("user", "hello")))
    assert input_tokens_upper_bound(req) >= len(("é" * 10 + "\nhello").encode())


def test_worst_case_uses_max_tokens_times_n() -> None:
    req = TeacherRequest(prompt="abcd", params=GenerationParams(max_tokens=100, n=3))
    price = Price(0.0, 1e6)  # $1 per output token, inputs free
    assert worst_case_cost(req, price) == pytest.approx(300.0)


def test_a_classification_call_reserves_no_output_tokens() -> None:
    params = GenerationParams(max_tokens=256, n=1)
    scored = TeacherRequest(prompt="abcd", params=params, candidates=(" cat", " dog"))
    generated = TeacherRequest(prompt="abcd", params=params)
    price = Price(1e6, 1e6)  # $1 per token either way
    assert worst_case_cost(scored, price) == pytest.approx(input_tokens_upper_bound(scored))
    assert worst_case_cost(generated, price) == pytest.approx(
        input_tokens_upper_bound(generated) + 256
    )


def test_reserve_then_settle_never_exceeds_the_limit() -> None:
    rng = random.Random(0)
    for _ in range(200):
        budget = Budget(limit_usd=rng.uniform(0.5, 5), spent_usd=0)
        in_flight: list[tuple[float, float]] = []
        while True:
            worst = rng.uniform(0.01, 0.3)
            if not budget.try_reserve(worst):
                break
            in_flight.append((worst, worst * rng.random()))
            if rng.random() < 0.5 and in_flight:
                budget.settle(*in_flight.pop(rng.randrange(len(in_flight))))
        for reserved, actual in in_flight:
            budget.settle(reserved, actual)
        assert budget.limit is not None
        assert budget.spent <= budget.limit
        assert budget.reserved == pytest.approx(0, abs=1e-9)
