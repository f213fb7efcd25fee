"""Prices and the budget.

Prices are USD per 1M input / output tokens, from the providers' public price pages as of
2026-11 for a few common models; `cost.input_per_1m` / `cost.output_per_1m` in a config
override them, and are required for a model not listed here when a budget is set.

The budget is a hard cap on what a run store has ever spent: before each call the runner
reserves the call's worst case (an upper bound on its input tokens, plus max_tokens x n),
and settles to the billed usage on completion. A call in flight when a run is killed may
have been billed, so its reservation counts as spent for good.
"""

from __future__ import annotations

from dataclasses import dataclass

from stillroom.config import CostConfig, GenerationConfig
from stillroom.errors import BudgetExceeded, ConfigError
from stillroom.teachers.base import TeacherRequest

# model name prefix -> (input, output) USD per 1M tokens
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}

# Chat formatting adds a few tokens per message; byte-level BPE never yields more tokens
# than UTF-8 bytes, so bytes + overhead bounds the input tokens from above.
_PER_MESSAGE_OVERHEAD = 8
_PER_REQUEST_OVERHEAD = 16


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6

    @property
    def free(self) -> bool:
        return self.input_per_1m == 0 and self.output_per_1m == 0


def price_for(model: str, kind: str, cfg: CostConfig, source: str = "config") -> Price:
    """The price of a teacher: config override, else the table, else free for local models."""
    if cfg.input_per_1m is not None and cfg.output_per_1m is not None:
        return Price(cfg.input_per_1m, cfg.output_per_1m)
    if kind == "local":
        return Price(0.0, 0.0)
    for prefix in sorted(PRICES, key=len, reverse=True):
        if model.startswith(prefix):
            return Price(*PRICES[prefix])
    if cfg.budget_usd is not None:
        raise ConfigError(
            source,
            [
                f"cost: no price known for model {model!r}; set cost.input_per_1m and "
                "cost.output_per_1m (USD per 1M tokens) so the budget can be enforced"
            ],
        )
    return Price(0.0, 0.0)


def input_tokens_upper_bound(request: TeacherRequest) -> int:
    n_messages = len(request.messages) if request.messages else 1
    text = request.text_for_estimate()
    return len(text.encode()) + _PER_MESSAGE_OVERHEAD * n_messages + _PER_REQUEST_OVERHEAD


def input_tokens_estimate(request: TeacherRequest) -> int:
    """A typical figure (~4 characters per token) for dry-run estimates, not a bound."""
    return max(1, len(request.text_for_estimate()) // 4) + 4


def worst_case_cost(request: TeacherRequest, gen: GenerationConfig, price: Price) -> float:
    if price.free:
        return 0.0
    out = (gen.max_tokens or 0) * gen.n
    return price.cost(input_tokens_upper_bound(request), out)


class Budget:
    """Reserve-then-settle accounting against a hard cap. Single event loop: no locks."""

    def __init__(self, limit_usd: float | None, spent_usd: float) -> None:
        self.limit = limit_usd
        self.spent = spent_usd
        self.reserved = 0.0

    def try_reserve(self, usd: float) -> bool:
        if self.limit is not None and self.spent + self.reserved + usd > self.limit + 1e-12:
            return False
        self.reserved += usd
        return True

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        self.reserved -= reserved_usd
        self.spent += actual_usd

    def check_can_start(self) -> None:
        if self.limit is not None and self.spent >= self.limit:
            raise BudgetExceeded(
                f"budget of ${self.limit:.4f} is spent (${self.spent:.4f} so far in this run "
                "store); raise --budget to continue"
            )
