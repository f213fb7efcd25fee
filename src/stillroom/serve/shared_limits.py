"""Rate limits shared by several gateway processes: the token buckets of `limits`, kept in
PostgreSQL (`stillroom serve --limits URL`).

Why PostgreSQL: a gateway with more than one replica already keeps its accounts, keys and
request log on a PostgreSQL server, so the limits need no new service to run, secure and
back up; and one `INSERT ... ON CONFLICT DO UPDATE` is an atomic read-refill-take on a row,
under the row's lock, so two replicas can never both spend the last credit. Redis would do
the same in a Lua script, at the price of one more server for the operator.

One row per (scope, id): an account's request and token buckets together, so a request
takes both or neither in the one statement. Time is the database's `clock_timestamp()`,
never a replica's clock, so replicas on different machines agree on how much has refilled.
The table is UNLOGGED: no write-ahead log for a row rewritten on every request; a server
crash empties it, which only hands every account a full minute's credit once. Statements go
through psycopg's async connections on the gateway's event loop: a thread hand-off per
request would wait behind the busy loop for the GIL (see `db.in_process`).

Semantics are those of the in-memory `Limiter`, but for one: when an account's limits
change, the level carries over (clamped to the new cap) instead of starting full, since
replicas whose key caches still hold the old limits would otherwise reset the bucket to
full on every other request until their caches expire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from stillroom.errors import APIError, GatewayDBError

T = TypeVar("T")

# A refused request is told to wait at least this: its row may have refilled (or been swept)
# between the statement that refused it and the one that reads the levels, and 0 means "go".
MIN_WAIT_S = 1e-3
SWEEP_EVERY_S = 60.0  # how often a process deletes buckets that have refilled completely
SCHEMA_LOCK = 0x5354494C4C  # advisory lock id: replicas starting together create the table once
POOL_SIZE = 4  # connections per process: a statement holds one for a fraction of a millisecond

CREATE_TABLE = """
CREATE UNLOGGED TABLE IF NOT EXISTS limit_buckets (
    scope TEXT NOT NULL,
    id TEXT NOT NULL,
    rpm DOUBLE PRECISION,
    tpm DOUBLE PRECISION,
    req_level DOUBLE PRECISION,
    tok_level DOUBLE PRECISION,
    updated TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, id)
)
"""

# Refill since the row was last written (never negative: a statement that waited for the
# row's lock may carry an earlier clock than the one that held it), capped at the limit.
# NULL limits (no limit) make NULL levels, which the WHERE treats as always enough.
_ELAPSED = "GREATEST(0, EXTRACT(EPOCH FROM EXCLUDED.updated - b.updated))"
_REQ = f"LEAST(EXCLUDED.rpm, COALESCE(b.req_level, EXCLUDED.rpm) + {_ELAPSED} * EXCLUDED.rpm / 60)"
_TOK = f"LEAST(EXCLUDED.tpm, COALESCE(b.tok_level, EXCLUDED.tpm) + {_ELAPSED} * EXCLUDED.tpm / 60)"

# The whole admission in one statement: a new row starts full and so always admits (as a
# new in-memory bucket does); an existing row is refilled and taken from only if both of
# its buckets hold enough. A huge request needs only a full bucket and leaves it in debt.
TAKE = f"""
INSERT INTO limit_buckets AS b (scope, id, rpm, tpm, req_level, tok_level, updated)
VALUES (%(scope)s, %(id)s, CAST(%(rpm)s AS DOUBLE PRECISION), CAST(%(tpm)s AS DOUBLE PRECISION),
        CAST(%(rpm)s AS DOUBLE PRECISION) - 1, CAST(%(tpm)s AS DOUBLE PRECISION) - %(tokens)s,
        clock_timestamp())
ON CONFLICT (scope, id) DO UPDATE SET
    rpm = EXCLUDED.rpm,
    tpm = EXCLUDED.tpm,
    req_level = {_REQ} - 1,
    tok_level = {_TOK} - %(tokens)s,
    updated = EXCLUDED.updated
WHERE (EXCLUDED.rpm IS NULL OR {_REQ} >= LEAST(1, EXCLUDED.rpm))
  AND (EXCLUDED.tpm IS NULL OR {_TOK} >= LEAST(%(tokens)s, EXCLUDED.tpm))
RETURNING 1
"""

# What a refused request reads to say how long to wait; it takes nothing.
LEVELS = """
SELECT rpm, tpm, req_level, tok_level,
       GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - updated)) AS elapsed
FROM limit_buckets WHERE scope = %(scope)s AND id = %(id)s
"""

# Like the in-memory `give_back`: no refill, capped at the limit.
GIVE_BACK = """
UPDATE limit_buckets SET tok_level = LEAST(tpm, tok_level + %(amount)s)
WHERE scope = %(scope)s AND id = %(id)s AND tok_level IS NOT NULL
"""

# A bucket untouched for a minute and not in debt is full: the same as no row at all.
SWEEP = """
DELETE FROM limit_buckets
WHERE updated < clock_timestamp() - INTERVAL '60 seconds'
  AND COALESCE(req_level, 0) >= 0 AND COALESCE(tok_level, 0) >= 0
"""


def conninfo(url: str) -> str:
    """libpq's form of a URL as a user types it, or as SQLAlchemy spells it."""
    if url.startswith("postgresql+"):
        return "postgresql://" + url.split("://", 1)[1]
    if not url.startswith(("postgresql://", "postgres://")):
        raise GatewayDBError(f"--limits needs a postgresql:// URL, not {url!r}")
    return url


def create_limits_table(url: str) -> str:
    """Make the buckets' table if it is missing (at start, so a bad URL fails at once);
    return the conninfo to connect with."""
    info = conninfo(url)
    try:
        with psycopg.connect(info, connect_timeout=10) as conn:
            # CREATE ... IF NOT EXISTS races with itself in the catalog; the lock serializes it.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute(CREATE_TABLE)
    except psycopg.Error as e:
        raise GatewayDBError(
            f"cannot open the limits database {url!r}: {e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}; give --limits a reachable "
            "postgresql:// URL"
        ) from None
    return info


class ConnectionPool:
    """A few autocommit connections, opened on first use on the event loop that uses them:
    each statement is its own transaction and holds a bucket's row lock only while it runs."""

    def __init__(self, info: str, size: int = POOL_SIZE) -> None:
        self.info = info
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self, fresh: bool = False) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """An idle connection, or a new one (`fresh`: always, and the idle ones closed, since
        the server dropped at least one of them)."""
        async with self._slots:
            if fresh:
                await self.aclose()
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                yield conn
            except BaseException:
                await conn.close()  # broken, or mid-statement: never hand it out again
                raise
            if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                await conn.close()
            else:
                self._idle.append(conn)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.info, autocommit=True, connect_timeout=10)

    async def aclose(self) -> None:
        while self._idle:
            await self._idle.pop().close()


class SharedLimiter:
    """`Limiter`'s interface, awaited, on a PostgreSQL table: `scope` keeps accounts and
    client addresses apart in it."""

    def __init__(
        self, pool: ConnectionPool, scope: str, default_rpm: int | None, default_tpm: int | None
    ) -> None:
        self.pool = pool
        self.scope = scope
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm
        self._swept = time.monotonic()
        self._settling: set[asyncio.Task[None]] = set()

    async def admit(self, account_id: str, rpm: int | None, tpm: int | None, tokens: int) -> float:
        """Take one request and `tokens` tokens, or return the seconds to wait (nothing taken)."""
        rpm, tpm = rpm or self.default_rpm, tpm or self.default_tpm
        if rpm is None and tpm is None:
            return 0.0
        key = {"scope": self.scope, "id": account_id}
        params = {**key, "rpm": rpm, "tpm": tpm, "tokens": tokens}

        async def take(conn: psycopg.AsyncConnection[Any]) -> float:
            await self._sweep_now_and_then(conn)
            if await (await conn.execute(TAKE, params)).fetchone() is not None:
                return 0.0
            row = await (await conn.execute(LEVELS, key)).fetchone()
            return _wait_s(row, tokens) if row is not None else MIN_WAIT_S

        return await self._on_a_connection(take)

    async def settle(self, account_id: str, reserved: int, used: int) -> None:
        """Give back tokens reserved for the worst case but not used."""
        if reserved <= used:
            return
        params = {"scope": self.scope, "id": account_id, "amount": reserved - used}

        async def give_back(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(GIVE_BACK, params)

        await self._on_a_connection(give_back)

    def settle_soon(self, account_id: str, reserved: int, used: int) -> None:
        """`settle` without making the reply wait for its round trip: a refund a moment late
        only refuses what a moment earlier would have been refused too."""
        task = asyncio.create_task(self.settle(account_id, reserved, used))
        self._settling.add(task)  # a task nobody holds may be collected before it runs
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a lost refund only makes the limit a little stricter

    async def aclose(self) -> None:
        """Wait for the refunds under way."""
        await asyncio.gather(*self._settling, return_exceptions=True)

    async def _on_a_connection(
        self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        """`work` on a pooled connection. One the server dropped while it sat idle (a restart,
        an idle timeout) fails its first statement: that is tried once more on a new one.
        The database unreachable is a 503 to the client: without its limits the gateway
        refuses rather than serve unlimited."""
        try:
            try:
                async with self.pool.connection() as conn:
                    return await work(conn)
            except psycopg.OperationalError:
                async with self.pool.connection(fresh=True) as conn:
                    return await work(conn)
        except psycopg.Error as e:
            raise APIError(
                503,
                f"the shared rate limits are unreachable ({e.__class__.__name__}); retry later",
                type="api_error",
                code="limits_unavailable",
                headers={"Retry-After": "1"},
            ) from None

    async def _sweep_now_and_then(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if time.monotonic() - self._swept >= SWEEP_EVERY_S:
            self._swept = time.monotonic()
            await conn.execute(SWEEP)


def _wait_s(row: tuple[Any, ...], tokens: int) -> float:
    """Seconds until both buckets hold enough, from a row as `LEVELS` reads it."""
    rpm, tpm, req_level, tok_level, elapsed = row
    waits = [0.0]
    for cap, level, amount in ((rpm, req_level, 1), (tpm, tok_level, tokens)):
        if cap is None or level is None:
            continue
        rate = cap / 60.0
        have = min(cap, level + float(elapsed) * rate)
        need = min(float(amount), cap)
        waits.append(max(0.0, (need - have) / rate))
    return max(max(waits), MIN_WAIT_S)
