"""The console's own tables in the gateway database: reviewers, sessions, the audit trail.

A reviewer's token is `scr-<reviewer id>-<secret>` with a 32-byte random secret; only its
SHA-256 is stored (as the gateway does for API keys: a random 256-bit secret has nothing to
brute-force), and the plain token is shown once, when it is made. A session is a random id
in an HttpOnly cookie, stored hashed too, with its own CSRF token and an expiry.

The trail is append-only: the code never updates or deletes a row, and the database refuses
to (a trigger on SQLite and PostgreSQL), so what a reviewer did stays as written.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stillroom.audit import runs_store
from stillroom.errors import StillroomError

ROLES = ("viewer", "reviewer", "admin")
metadata = sa.MetaData()

reviewers = sa.Table(
    "console_reviewers",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # rev_<hex>
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("role", sa.String(10), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("disabled_at", sa.Float),
)

sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("reviewer_id", sa.String(40), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # at the latest, however busy
    sa.Column("seen_at", sa.Float, nullable=False),  # last use, to the minute (idle expiry)
)

trail = sa.Table(
    "console_trail",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("reviewer", sa.String(100), nullable=False),
    sa.Column("role", sa.String(10), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("case_id", sa.Integer),
    sa.Column("accounts", sa.Text, nullable=False),  # JSON list
    sa.Column("before", sa.Text, nullable=False),  # JSON
    sa.Column("after", sa.Text, nullable=False),  # JSON
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("policy", sa.String(40)),
    sa.Index("ix_console_trail_case", "case_id", "id"),
)

attachments = sa.Table(
    "console_attachments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),  # "trace": a `stillroom trace` verdict
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("reviewer", sa.String(100), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # JSON, as the tool wrote it
)

_SQLITE_GUARD = """CREATE TRIGGER IF NOT EXISTS console_trail_no_{op}
BEFORE {op} ON console_trail BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"""
_PG_GUARD = [
    """CREATE OR REPLACE FUNCTION console_trail_append_only() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS console_trail_guard ON console_trail",
    """CREATE TRIGGER console_trail_guard BEFORE UPDATE OR DELETE ON console_trail
    FOR EACH ROW EXECUTE FUNCTION console_trail_append_only()""",
]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")


class ConsoleError(StillroomError):
    """A console request or command that cannot be done; the message says the fix. `status`
    is the HTTP status the console answers it with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Reviewer:
    id: str
    name: str
    role: str

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class Session:
    reviewer: Reviewer
    csrf: str
    expires_at: float


def _initial(conn: sa.Connection) -> None:
    for table in (reviewers, sessions, trail, attachments):
        table.create(conn, checkfirst=True)
    if conn.dialect.name == "sqlite":
        for op in ("UPDATE", "DELETE"):
            conn.execute(sa.text(_SQLITE_GUARD.format(op=op)))
    elif conn.dialect.name == "postgresql":
        for statement in _PG_GUARD:
            conn.execute(sa.text(statement))


# Append-only (runs_store.migrate): never edit a released entry; add one.
MIGRATIONS: list[tuple[int, runs_store.Migration]] = [(1, _initial)]


def create_tables(engine: Engine) -> None:
    """The audit's tables and the console's, migrated to their latest versions."""
    runs_store.create_tables(engine)
    runs_store.migrate(engine, "console", MIGRATIONS)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add_reviewer(engine: Engine, name: str, role: str) -> tuple[Reviewer, str]:
    """A new reviewer and their token (returned once; only its hash is kept)."""
    if role not in ROLES:
        raise ConsoleError(f"role {role!r} is not one of {', '.join(ROLES)}; pick one")
    if not _NAME.fullmatch(name):
        raise ConsoleError(
            f"reviewer name {name!r}: use 1-100 letters, digits, '.', '_', '@' or '-'"
        )
    rid = "rev_" + secrets.token_hex(6)
    token = f"scr-{rid}-{secrets.token_urlsafe(32)}"
    with engine.begin() as conn:
        if conn.execute(sa.select(reviewers.c.id).where(reviewers.c.name == name)).first():
            raise ConsoleError(f"a reviewer named {name!r} exists; pick another name")
        conn.execute(
            reviewers.insert().values(
                id=rid, name=name, role=role, token_hash=_hash(token), created_at=time.time()
            )
        )
    return Reviewer(rid, name, role), token


def list_reviewers(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                reviewers.c.id,
                reviewers.c.name,
                reviewers.c.role,
                reviewers.c.created_at,
                reviewers.c.disabled_at,
            ).order_by(reviewers.c.created_at)
        )
        return [dict(r._mapping) for r in rows]


def disable_reviewer(engine: Engine, name: str) -> None:
    """A disabled reviewer's token stops working, and their sessions end."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(reviewers.c.id).where(reviewers.c.name == name)).first()
        if row is None:
            raise ConsoleError(f"no reviewer {name!r}; `stillroom console reviewers` lists them")
        conn.execute(
            reviewers.update().where(reviewers.c.id == row.id).values(disabled_at=time.time())
        )
        conn.execute(sessions.delete().where(sessions.c.reviewer_id == row.id))


def reviewer_named(engine: Engine, name: str, role: str) -> Reviewer:
    """An enabled reviewer by name, who must hold `role` or higher (commands act as them)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(reviewers).where(reviewers.c.name == name, reviewers.c.disabled_at.is_(None))
        ).first()
    if row is None:
        raise ConsoleError(f"--reviewer {name!r}: no such enabled reviewer; add one first")
    who = Reviewer(row.id, row.name, row.role)
    if not who.may(role):
        raise ConsoleError(f"--reviewer {name!r} is a {who.role}; this needs {role} or higher")
    return who


def login(engine: Engine, token: str, lifetime_s: float) -> tuple[str, Session] | None:
    """A new session for the reviewer holding `token` (its cookie value, and the session);
    None for an unknown or disabled token."""
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(reviewers).where(
                reviewers.c.token_hash == _hash(token.strip()), reviewers.c.disabled_at.is_(None)
            )
        ).first()
        if row is None:
            return None
        cookie, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time()
        conn.execute(sessions.delete().where(sessions.c.expires_at < now))
        conn.execute(
            sessions.insert().values(
                id_hash=_hash(cookie),
                reviewer_id=row.id,
                csrf=csrf,
                created_at=now,
                expires_at=now + lifetime_s,
                seen_at=now,
            )
        )
    return cookie, Session(Reviewer(row.id, row.name, row.role), csrf, now + lifetime_s)


TOUCH_S = 60.0  # a session's last use is written at most once a minute, not per request


def session(engine: Engine, cookie: str, idle_s: float = float("inf")) -> Session | None:
    """The live session of a cookie, or None (unknown, past its lifetime, unused for more
    than `idle_s`, or its reviewer disabled)."""
    now = time.time()
    q = (
        sa.select(
            sessions.c.csrf,
            sessions.c.expires_at,
            sessions.c.seen_at,
            reviewers.c.id,
            reviewers.c.name,
            reviewers.c.role,
        )
        .join(reviewers, reviewers.c.id == sessions.c.reviewer_id)
        .where(
            sessions.c.id_hash == _hash(cookie),
            sessions.c.expires_at > now,
            sessions.c.seen_at > now - idle_s,
            reviewers.c.disabled_at.is_(None),
        )
    )
    with engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    if now - row.seen_at > min(TOUCH_S, idle_s / 4):
        with engine.begin() as conn:
            conn.execute(
                sessions.update().where(sessions.c.id_hash == _hash(cookie)).values(seen_at=now)
            )
    return Session(Reviewer(row.id, row.name, row.role), row.csrf, row.expires_at)


def logout(engine: Engine, cookie: str) -> None:
    with engine.begin() as conn:
        conn.execute(sessions.delete().where(sessions.c.id_hash == _hash(cookie)))


def append(
    conn: sa.Connection,
    who: Reviewer,
    action: str,
    case_id: int | None,
    accounts: list[str],
    before: Any,
    after: Any,
    reason: str,
    policy: str | None = None,
) -> None:
    """One trail entry, in the caller's transaction: it commits with the change it records."""
    conn.execute(
        trail.insert().values(
            at=time.time(),
            reviewer=who.name,
            role=who.role,
            action=action,
            case_id=case_id,
            accounts=json.dumps(accounts),
            before=json.dumps(before),
            after=json.dumps(after),
            reason=reason,
            policy=policy,
        )
    )


def entries(
    engine: Engine, case_id: int | None = None, limit: int | None = None, newest: bool = False
) -> list[dict]:
    """Trail entries, oldest first (or `newest` first); one case's, or all."""
    q = sa.select(trail).order_by(trail.c.id.desc() if newest else trail.c.id)
    if case_id is not None:
        q = q.where(trail.c.case_id == case_id)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        for k in ("accounts", "before", "after"):
            d[k] = json.loads(d[k])
        out.append(d)
    return out
