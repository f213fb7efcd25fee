"""The budget, and what a call may cost (prices: `stillroom.prices`; token bounds:
`stillroom.teachers.estimates`).

The budget is a hard cap on what a run store has ever spent: before each call the runner
reserves the call's worst case (an upper bound on its input tokens, plus max_tokens x n, or
nothing for a classification call, which generates no tokens),
and settles to the billed usage on completion. A call in flight when a run is killed may
have been billed, so its reservation counts as spent for good, even once a later run asks
again and is answered (the teacher may have billed both).
"""

from __future__ import annotations

from stillroom.errors import BudgetExceeded
from stillroom.prices import Price
from stillroom.teachers.base import TeacherRequest
from stillroom.teachers.estimates import input_tokens_upper_bound, output_tokens_upper_bound


def worst_case_cost(request: TeacherRequest, price: Price) -> float:
    if price.free:
        return 0.0
    return price.cost(input_tokens_upper_bound(request), output_tokens_upper_bound(request))


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
