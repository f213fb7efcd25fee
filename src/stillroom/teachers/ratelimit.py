"""Async token buckets for requests-per-minute and tokens-per-minute limits."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Refills `per_minute / 60` units a second up to `burst`; `acquire` waits for credit.

    Debt is allowed (a request larger than the bucket goes through once the bucket is full),
    so one oversized request cannot block the run forever.
    """

    def __init__(self, per_minute: float, burst: float | None = None) -> None:
        self.rate = per_minute / 60.0
        # A second's worth of burst keeps a fresh client from firing a minute's quota at once.
        self.capacity = burst if burst is not None else max(1.0, self.rate)
        self.level = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:  # first come, first served
            self._refill()
            need = min(amount, self.capacity)
            if self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def refund(self, amount: float) -> None:
        """Give back credit taken for an estimate larger than what was used."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)
