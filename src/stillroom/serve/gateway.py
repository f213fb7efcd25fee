"""`Gateway`: the state one gateway process shares between its routes (database, backend,
request log, limiter, key cache), and `ServeSettings`, what an operator chose at start.

Its own module so that the app and the admin router both import it, and neither the other.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from stillroom.serve.accounts import Principal, lookup_key
from stillroom.serve.backends import Backend
from stillroom.serve.db import in_process
from stillroom.serve.limits import MAX_TRACKED, Limiter
from stillroom.serve.log import RequestLog
from stillroom.serve.shared_limits import ConnectionPool, SharedLimiter, create_limits_table

KEY_CACHE_S = 1.0  # a block or revoke made from another process takes effect within this


@dataclass
class ServeSettings:
    admin_token: str | None = None
    default_rpm: int | None = None
    default_tpm: int | None = None
    default_max_tokens: int = 256
    # Bodies over this are refused (413) while they arrive; OpenAI's own chat bodies are
    # far below it.
    max_body_bytes: int = 4 * 1024 * 1024
    # Requests a minute one client address may make without a valid key: a refusal is
    # cheap to ask for, but each one is a log row.
    unauthenticated_rpm: int = 60
    api_docs: bool = False  # /docs and /openapi.json: they list the admin routes too
    # A postgresql:// URL where replicas share their rate limits (None: each in its memory).
    limits_url: str | None = None


class Gateway:
    def __init__(self, engine: Engine, backend: Backend, settings: ServeSettings) -> None:
        self.engine = engine
        self.backend = backend
        self.settings = settings
        self.log = RequestLog(engine)
        self.limiter: Limiter | SharedLimiter
        self.anonymous: Limiter | SharedLimiter
        if settings.limits_url is None:
            self.limiter = Limiter(settings.default_rpm, settings.default_tpm)
            self.anonymous = Limiter(settings.unauthenticated_rpm, None)
        else:  # shared with the other replicas, in the database at `limits_url`
            pool = ConnectionPool(create_limits_table(settings.limits_url))
            rpm, tpm = settings.default_rpm, settings.default_tpm
            self.limiter = SharedLimiter(pool, "account", rpm, tpm)
            self.anonymous = SharedLimiter(pool, "address", settings.unauthenticated_rpm, None)
        self._keys: dict[str, tuple[float, Principal | None]] = {}
        self._inline_db = in_process(engine)

    def forget_account(self, account_id: str) -> None:
        """Drop cached keys of an account, so a block or limit change applies at once."""
        self._keys = {
            k: v for k, v in self._keys.items() if v[1] is None or v[1].account.id != account_id
        }

    async def admit(self, account_id: str, rpm: int | None, tpm: int | None, tokens: int) -> float:
        """Take one request and `tokens` tokens from an account, or return the seconds to wait."""
        if isinstance(self.limiter, Limiter):
            return self.limiter.admit(account_id, rpm, tpm, tokens)
        return await self.limiter.admit(account_id, rpm, tpm, tokens)

    def settle(self, account_id: str, reserved: int, used: int) -> None:
        """Give back tokens reserved but not used (shared: in the background, off the reply)."""
        if isinstance(self.limiter, Limiter):
            self.limiter.settle(account_id, reserved, used)
        else:
            self.limiter.settle_soon(account_id, reserved, used)

    async def admit_anonymous(self, addr: str) -> float:
        """Take one of the requests `addr` may make without a valid key, or the wait."""
        if isinstance(self.anonymous, Limiter):
            return self.anonymous.admit(addr, None, None, 0)
        return await self.anonymous.admit(addr, None, None, 0)

    async def aclose(self) -> None:
        if isinstance(self.limiter, SharedLimiter):  # both limiters share its pool
            await self.limiter.aclose()
            await self.limiter.pool.aclose()

    async def principal(self, key: str) -> Principal | None:
        cached = self._keys.get(key)
        if cached and time.monotonic() - cached[0] < KEY_CACHE_S:
            return cached[1]
        if self._inline_db:  # an indexed read: see `in_process`
            found = lookup_key(self.engine, key)
        else:
            found = await asyncio.to_thread(lookup_key, self.engine, key)
        if len(self._keys) > MAX_TRACKED:  # a flood of random keys must not grow memory forever
            self._keys.clear()
        self._keys[key] = (time.monotonic(), found)
        return found
