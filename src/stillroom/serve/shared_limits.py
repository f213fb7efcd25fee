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
crash empties it, which only hands every account a full minute's credit once.

Semantics are those of the in-memory `Limiter`, but for one: when an account's limits
change, the level carries over (clamped to the new cap) instead of starting full, since
replicas whose key caches still hold the old limits would otherwise reset the bucket to
full on every other request until their caches expire.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from stillroom.errors import GatewayDBError
from stillroom.serve.db import database_url

# A refused request is told to wait at least this: its row may have refilled (or been swept)
# between the statement that refused it and the one that reads the levels, and 0 means "go".
MIN_WAIT_S = 1e-3
SWEEP_EVERY_S = 60.0  # how often a process deletes buckets that have refilled completely
SCHEMA_LOCK = 0x5354494C4C  # advisory lock id: replicas starting together create the table once

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
TAKE = sa.text(f"""
INSERT INTO limit_buckets AS b (scope, id, rpm, tpm, req_level, tok_level, updated)
VALUES (:scope, :id, CAST(:rpm AS DOUBLE PRECISION), CAST(:tpm AS DOUBLE PRECISION),
        CAST(:rpm AS DOUBLE PRECISION) - 1, CAST(:tpm AS DOUBLE PRECISION) - :tokens,
        clock_timestamp())
ON CONFLICT (scope, id) DO UPDATE SET
    rpm = EXCLUDED.rpm,
    tpm = EXCLUDED.tpm,
    req_level = {_REQ} - 1,
    tok_level = {_TOK} - :tokens,
    updated = EXCLUDED.updated
WHERE (EXCLUDED.rpm IS NULL OR {_REQ} >= LEAST(1, EXCLUDED.rpm))
  AND (EXCLUDED.tpm IS NULL OR {_TOK} >= LEAST(:tokens, EXCLUDED.tpm))
RETURNING 1
""")

# What a refused request reads to say how long to wait; it takes nothing.
LEVELS = sa.text("""
SELECT rpm, tpm, req_level, tok_level,
       GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - updated)) AS elapsed
FROM limit_buckets WHERE scope = :scope AND id = :id
""")

# Like the in-memory `give_back`: no refill, capped at the limit.
GIVE_BACK = sa.text("""
UPDATE limit_buckets SET tok_level = LEAST(tpm, tok_level + :amount)
WHERE scope = :scope AND id = :id AND tok_level IS NOT NULL
""")

# A bucket untouched for a minute and not in debt is full: the same as no row at all.
SWEEP = sa.text("""
DELETE FROM limit_buckets
WHERE updated < clock_timestamp() - INTERVAL '60 seconds'
  AND COALESCE(req_level, 0) >= 0 AND COALESCE(tok_level, 0) >= 0
""")


def open_limits_db(url: str) -> Engine:
    """An engine on the limits database, with its table; autocommit, so each statement is
    its own transaction and holds a bucket's row lock only while it runs."""
    if not url.startswith(("postgresql://", "postgres://", "postgresql+")):
        raise GatewayDBError(f"--limits needs a postgresql:// URL, not {url!r}")
    engine = sa.create_engine(
        database_url(url),
        pool_size=4,
        max_overflow=4,
        pool_pre_ping=True,
        isolation_level="AUTOCOMMIT",
    )
    try:
        with engine.connect() as conn:
            _create_table(conn)
    except sa.exc.SQLAlchemyError as e:
        raise GatewayDBError(
            f"cannot open the limits database {url!r}: {e.__class__.__name__}: "
            f"{str(e).splitlines()[0]}; give --limits a reachable postgresql:// URL"
        ) from None
    return engine


def _create_table(conn: Connection) -> None:
    # CREATE ... IF NOT EXISTS races with itself in the catalog; the lock serializes it.
    with conn.begin():
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
        conn.execute(sa.text(CREATE_TABLE))


class SharedLimiter:
    """`Limiter`'s interface on a PostgreSQL table: `scope` keeps accounts and client
    addresses apart in it. Its calls block on a round trip: run them off the event loop."""

    in_process = False

    def __init__(
        self, engine: Engine, scope: str, default_rpm: int | None, default_tpm: int | None
    ) -> None:
        self.engine = engine
        self.scope = scope
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm
        self._swept = time.monotonic()

    def admit(self, account_id: str, rpm: int | None, tpm: int | None, tokens: int) -> float:
        """Take one request and `tokens` tokens, or return the seconds to wait (nothing taken)."""
        rpm, tpm = rpm or self.default_rpm, tpm or self.default_tpm
        if rpm is None and tpm is None:
            return 0.0
        key = {"scope": self.scope, "id": account_id}
        with self.engine.connect() as conn:
            self._sweep_now_and_then(conn)
            taken = conn.execute(TAKE, {**key, "rpm": rpm, "tpm": tpm, "tokens": tokens})
            if taken.first() is not None:
                return 0.0
            row = conn.execute(LEVELS, key).first()
        return _wait_s(row, tokens) if row is not None else MIN_WAIT_S

    def settle(self, account_id: str, reserved: int, used: int) -> None:
        """Give back tokens reserved for the worst case but not used."""
        if reserved <= used:
            return
        with self.engine.connect() as conn:
            conn.execute(
                GIVE_BACK, {"scope": self.scope, "id": account_id, "amount": reserved - used}
            )

    def _sweep_now_and_then(self, conn: Connection) -> None:
        if time.monotonic() - self._swept >= SWEEP_EVERY_S:
            self._swept = time.monotonic()
            conn.execute(SWEEP)


def _wait_s(row: sa.Row[Any], tokens: int) -> float:
    """Seconds until both buckets hold enough, from a row as `LEVELS` reads it."""
    rpm, tpm, req_level, tok_level, elapsed = tuple(row)
    waits = [0.0]
    for cap, level, amount in ((rpm, req_level, 1), (tpm, tok_level, tokens)):
        if cap is None or level is None:
            continue
        rate = cap / 60.0
        have = min(cap, level + float(elapsed) * rate)
        need = min(float(amount), cap)
        waits.append(max(0.0, (need - have) / rate))
    return max(max(waits), MIN_WAIT_S)
