"""Per-account request and token limits: token buckets that answer "wait this long" at once.

The gateway runs on one event loop, so taking from a bucket is atomic without a lock: two
concurrent requests can never both spend the last credit. Several gateway processes share
their buckets through `shared_limits` instead (`stillroom serve --limits URL`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

MAX_TRACKED = 100_000  # buckets kept; a flood of new addresses must not grow memory forever


class Bucket:
    """`per_minute` credits a minute, holding at most a minute's worth (OpenAI's semantics:
    a quota per minute, not per second)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.level = float(per_minute)
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(float(self.per_minute), self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` is available (0: available now)."""
        self._refill()
        need = min(amount, float(self.per_minute))  # a huge request waits for a full bucket
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self.level = min(float(self.per_minute), self.level + amount)


@dataclass
class AccountLimits:
    requests: Bucket | None
    tokens: Bucket | None


class Limiter:
    def __init__(self, default_rpm: int | None, default_tpm: int | None) -> None:
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm
        self._by_account: dict[str, tuple[tuple[int | None, int | None], AccountLimits]] = {}

    def admit(self, account_id: str, rpm: int | None, tpm: int | None, tokens: int) -> float:
        """Take one request and `tokens` tokens, or return the seconds to wait (nothing taken)."""
        limits = self._limits(account_id, rpm or self.default_rpm, tpm or self.default_tpm)
        wait = max(
            limits.requests.wait_s(1) if limits.requests else 0.0,
            limits.tokens.wait_s(tokens) if limits.tokens else 0.0,
        )
        if wait > 0:
            return wait
        if limits.requests:
            limits.requests.take(1)
        if limits.tokens:
            limits.tokens.take(tokens)
        return 0.0

    def settle(self, account_id: str, reserved: int, used: int) -> None:
        """Give back tokens reserved for the worst case but not used."""
        entry = self._by_account.get(account_id)
        if entry and entry[1].tokens and reserved > used:
            entry[1].tokens.give_back(reserved - used)

    def _limits(self, account_id: str, rpm: int | None, tpm: int | None) -> AccountLimits:
        entry = self._by_account.get(account_id)
        if entry is None or entry[0] != (rpm, tpm):  # new account, or its limits changed
            if len(self._by_account) >= MAX_TRACKED:  # the longest-known goes, not everyone
                del self._by_account[next(iter(self._by_account))]
            limits = AccountLimits(Bucket(rpm) if rpm else None, Bucket(tpm) if tpm else None)
            self._by_account[account_id] = ((rpm, tpm), limits)
            return limits
        return entry[1]
