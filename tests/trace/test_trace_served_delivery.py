"""The served-answer test reads only what clients received: rows the gateway marked as never
delivered are left out and counted, on SQLite and PostgreSQL; rows from before the gateway
recorded delivery (schema version 1, migrated or not) are taken as received."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from stillroom.errors import InputError
from stillroom.serve.accounts import create_account
from stillroom.serve.db import MIGRATIONS, open_db, requests, schema_migrations
from stillroom.trace.served import read_served, skipped_count, summarize
from stillroom.trace.statements import served_statement

# (prompt, delivery, choices): None is a row logged before delivery was recorded.
ROWS = [
    ("old", None, 1),
    ("kept", "delivered", 2),
    ("gone", "client_gone", 1),
    ("cut", "partial", 3),
    ("cut off by the server's end", "sending", 1),
    ("kept too", "delivered", 1),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "gateway.sqlite")
    return str(request.getfixturevalue("pg_database"))


def log_rows(db: str, rows: list[tuple[str, str | None, int]], *, delivery: bool = True) -> None:
    """An account 'acme' that asked each prompt once, answered with `choices` texts."""
    engine = open_db(db)
    try:
        account = create_account(engine, "acme")[0]
        with engine.begin() as conn:
            for n, (prompt, state, choices) in enumerate(rows):
                row = {
                    "id": f"chatcmpl-{n}",
                    "created_at": 1000.0 + n,
                    "account_id": account.id,
                    "endpoint": "chat.completions",
                    "status": 200,
                    "messages": json.dumps([{"role": "user", "content": prompt}]),
                    "params": "{}",
                    "response_text": json.dumps([f"{prompt} {c}" for c in range(choices)]),
                }
                if delivery:
                    row["delivery"] = state
                conn.execute(requests.insert().values(**row))
    finally:
        engine.dispose()


def as_version_1(db: str) -> None:
    """The database as schema version 1 left it: no delivery column."""
    engine = open_db(db)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE requests DROP COLUMN delivery"))
            conn.execute(schema_migrations.delete().where(schema_migrations.c.version > 1))
    finally:
        engine.dispose()


def test_answers_no_client_received_are_left_out_and_counted(db: str) -> None:
    log_rows(db, ROWS)
    served = read_served(db, ["acme"])
    assert [s.ref for s in served] == [
        "chatcmpl-0/0",
        "chatcmpl-1/0",
        "chatcmpl-1/1",
        "chatcmpl-5/0",
    ]
    assert served.undelivered_skipped == 5  # gone 1, cut 3, cut off 1
    # The count is of the whole log, whatever the limit takes.
    limited = read_served(db, ["acme"], limit=2)
    assert len(limited) == 2 and limited.undelivered_skipped == 5


def test_an_account_that_received_nothing_is_told_why(db: str) -> None:
    log_rows(db, [("gone", "client_gone", 2), ("cut", "partial", 1)])
    with pytest.raises(InputError, match="3 answers the client never received were left out"):
        read_served(db, ["acme"])


def test_a_log_from_before_delivery_was_recorded(db: str) -> None:
    log_rows(db, [("old", None, 1)], delivery=False)
    as_version_1(db)
    old = open_db(db, migrate=False)
    with old.connect() as conn:
        assert "delivery" not in {c["name"] for c in sa.inspect(conn).get_columns("requests")}
    old.dispose()
    # Read as it is (the trace never migrates a log): every answer taken as received.
    served = read_served(db, ["acme"])
    assert [s.ref for s in served] == ["chatcmpl-0/0"] and served.undelivered_skipped == 0
    # Opened by the gateway: migrated, the old row's delivery unknown (NULL).
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(requests.c.delivery)).scalars().all() == [None]
            versions = conn.execute(sa.select(schema_migrations.c.version)).scalars().all()
        assert sorted(versions) == [v for v, _ in MIGRATIONS]
    finally:
        engine.dispose()
    assert read_served(db, ["acme"]).undelivered_skipped == 0


def test_the_statement_says_what_was_left_out() -> None:
    def said(skipped: int) -> str:
        d = np.array([[0.2, 0.0], [-0.1, 0.0], [0.3, 0.0]])
        result = summarize(
            d, scoring="answers", accounts=["acme"], queries=3, baseline=None,
            undelivered_skipped=skipped,
        )  # fmt: skip
        return served_statement(result)

    assert "never received" not in said(0)
    assert said(1).endswith(" 1 answer the client never received was left out.")
    assert said(16).endswith(" 16 answers the client never received were left out.")


def test_the_count_goes_with_the_answers_read(tmp_path: Path) -> None:
    db = str(tmp_path / "gateway.sqlite")
    log_rows(db, ROWS)
    served = read_served(db, ["acme"])
    # What the likelihood and answers tests put in their result.
    assert skipped_count(served) == 5
    assert skipped_count(list(served)) == 0  # answers from elsewhere: nothing known skipped
