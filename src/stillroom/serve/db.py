"""The gateway database: accounts, API keys and the request log (SQLite or PostgreSQL).

The request log is the audit's input, so its schema is a public contract (README, "Request
log schema"). Migrations are append-only: a released migration is never edited; a change is
a new entry in `MIGRATIONS`. Times are UTC epoch seconds (REAL / DOUBLE PRECISION), which
every engine the audit reads (DuckDB, Spark, pandas) handles without a timezone dance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from stillroom.errors import GatewayDBError as GatewayDBError  # its home before the tree

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # acct_<hex>
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("blocked_at", sa.Float),  # NULL: active
    sa.Column("blocked_reason", sa.Text),
    sa.Column("rpm_limit", sa.Integer),  # NULL: the server's default
    sa.Column("tpm_limit", sa.Integer),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # key_<hex>, printed in the key itself
    sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # sha256 hex
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
    sa.Column("label", sa.String(200)),
)

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # req_<hex>, also the reply's id
    sa.Column("created_at", sa.Float, nullable=False),  # when the request arrived
    sa.Column("account_id", sa.String(40)),  # NULL when the key was missing or unknown
    sa.Column("key_id", sa.String(40)),
    sa.Column("endpoint", sa.String(40), nullable=False),  # chat.completions | completions
    sa.Column("model", sa.String(200)),
    sa.Column("messages", sa.Text),  # JSON list of {role, content}, chat only
    sa.Column("prompt", sa.Text),  # completions only
    sa.Column("params", sa.Text),  # JSON: n, temperature, top_p, max_tokens, stop, seed, ...
    sa.Column("response_text", sa.Text),  # JSON list of the choices' texts
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("status", sa.Integer, nullable=False),  # the HTTP status answered
    sa.Column("error", sa.Text),
    sa.Column("latency_ms", sa.Float),  # arrival to reply, inside the gateway
    sa.Column("backend_ms", sa.Float),  # of which the model backend took
    sa.Column("client_addr", sa.String(100)),
    sa.Column("user_agent", sa.Text),
    sa.Column("watermark_key_id", sa.String(40)),  # NULL: output not watermarked
    # How the reply went out (DELIVERY): NULL for refusals, and for rows from before schema
    # version 2, whose delivery is unknown (the served-answer test counts those as received).
    sa.Column("delivery", sa.String(16)),
    sa.Index("ix_requests_account_time", "account_id", "created_at"),
)

# A served reply's row is committed before the reply goes, as "sending"; once the reply is
# out, it becomes one of the three others. A row left "sending" was cut off by the server's
# own end: not known to have been received.
SENDING, DELIVERED, CLIENT_GONE, PARTIAL = "sending", "delivered", "client_gone", "partial"
DELIVERY = (
    SENDING,
    DELIVERED,  # the whole body was handed to the connection, the client still on it
    CLIENT_GONE,  # the client left before any of the body went out
    PARTIAL,  # a stream the client left before its end
)

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)


def _initial(conn: Connection) -> None:
    for table in (accounts, api_keys, requests):
        table.create(conn, checkfirst=True)


def _delivery(conn: Connection) -> None:
    # A database created since is made by `_initial` from today's table, column included.
    if "delivery" not in {c["name"] for c in sa.inspect(conn).get_columns("requests")}:
        conn.execute(sa.text("ALTER TABLE requests ADD COLUMN delivery VARCHAR(16)"))


# Append-only: (version, what it does). Never edit a released entry; add a new one.
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [(1, _initial), (2, _delivery)]


def database_url(db: str) -> str:
    """A SQLAlchemy URL from what a user types: a URL, or a path to a SQLite file."""
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + db.split("://", 1)[1]
    if "://" in db:
        return db
    path = Path(db).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def in_process(engine: Engine) -> bool:
    """Whether the database is a local SQLite file, with no network round trip: the gateway
    runs its quick statements on it (log inserts, key lookups) on the event loop, since a
    thread hand-off can wait a whole GIL switch interval (5 ms) behind a busy loop. A server
    database's round trip would stall the loop instead, so those go to a thread."""
    return engine.dialect.name == "sqlite"


def open_db(db: str, *, migrate: bool = True) -> Engine:
    """An engine on the gateway database, migrated to the latest schema."""
    url = database_url(db)
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
        if migrate:
            apply_migrations(engine)
    except sa.exc.SQLAlchemyError as e:
        raise GatewayDBError(
            f"cannot open the gateway database {db!r}: {e.__class__.__name__}: "
            f"{str(e).splitlines()[0]}; give --db a writable SQLite path or a reachable "
            "postgresql:// URL"
        ) from None
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (the audit, `accounts list`) never block the server's writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def apply_migrations(engine: Engine) -> int:
    """Apply the migrations not yet applied, each in its own transaction; return the version."""
    with engine.begin() as conn:
        schema_migrations.create(conn, checkfirst=True)
    with engine.begin() as conn:
        done = {r[0] for r in conn.execute(sa.select(schema_migrations.c.version))}
    for version, migrate in MIGRATIONS:
        if version in done:
            continue
        with engine.begin() as conn:
            migrate(conn)
            conn.execute(schema_migrations.insert().values(version=version, applied_at=now()))
    newest = max(v for v, _ in MIGRATIONS)
    if done and max(done) > newest:
        raise GatewayDBError(
            f"the gateway database is at schema version {max(done)}, newer than this "
            f"stillroom knows ({newest}); upgrade stillroom"
        )
    return newest


def now() -> float:
    return time.time()
