"""Teacher prices: USD per 1M input / output tokens.

The table holds the providers' public price pages as of 2026-11 for a few common models;
`cost.input_per_1m` / `cost.output_per_1m` in a config override them, and are required for a
model not listed here when a budget is set. It sits below teachers and harvest so either can
price a call without importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from stillroom.config import CostConfig
from stillroom.errors import ConfigError
from stillroom.teacher_config import TEACHER_KINDS

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


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6

    @property
    def free(self) -> bool:
        return self.input_per_1m == 0 and self.output_per_1m == 0


def price_for(model: str, kind: str, cfg: CostConfig) -> Price:
    """The price of a teacher: config override, else the table, else free for local models."""
    if cfg.input_per_1m is not None and cfg.output_per_1m is not None:
        return Price(cfg.input_per_1m, cfg.output_per_1m)
    if TEACHER_KINDS[kind].is_local:  # our own machine: no bill per token
        return Price(0.0, 0.0)
    for prefix in sorted(PRICES, key=len, reverse=True):
        if model.startswith(prefix):
            return Price(*PRICES[prefix])
    if cfg.budget_usd is not None:
        raise ConfigError(
            "config",
            [
                f"cost: no price known for model {model!r}; set cost.input_per_1m and "
                "cost.output_per_1m (USD per 1M tokens) so the budget can be enforced"
            ],
        )
    return Price(0.0, 0.0)
