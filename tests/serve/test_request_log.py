"""The request log writer on a real SQLite database: a group the database refuses fails its
own requests only, and leaves nothing half-written behind for the next group."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import sqlalchemy as sa

from stillroom.serve.db import open_db, requests
from stillroom.serve.log import LogRow, LogWriteError, RequestLog


def _row(rid: str) -> LogRow:
    return LogRow(id=rid, created_at=time.time(), endpoint="completions", status=200,
                  prompt="hello", response_text='["world"]', prompt_tokens=2,
                  completion_tokens=1, client_addr="127.0.0.1")  # fmt: skip


def test_a_refused_row_fails_alone_and_the_next_rows_commit(tmp_path: Path) -> None:
    engine = open_db(str(tmp_path / "log.sqlite"))

    async def run() -> None:
        log = RequestLog(engine)
        await log.write(_row("req_a"))
        # One group: a new row, then one whose primary key is taken. The database refuses
        # the group; both its requests fail, and the new row must not linger uncommitted
        # to be committed later with someone else's group.
        refused = await asyncio.gather(
            log.write(_row("req_x")), log.write(_row("req_a")), return_exceptions=True
        )
        assert [type(e) for e in refused] == [LogWriteError, LogWriteError]
        assert "UNIQUE" in str(refused[1])
        await asyncio.gather(log.write(_row("req_b")), log.write(_row("req_c")))
        await log.aclose()

    asyncio.run(run())
    with engine.connect() as conn:
        stored = conn.execute(sa.select(requests.c.id, requests.c.prompt)).all()
    assert sorted(stored) == [("req_a", "hello"), ("req_b", "hello"), ("req_c", "hello")]


def test_every_column_of_a_row_is_stored_as_written(tmp_path: Path) -> None:
    engine = open_db(str(tmp_path / "log.sqlite"))
    row = _row("req_full")
    row.account_id, row.key_id, row.model = "acct_1", "key_1", "tiny"
    row.params, row.latency_ms, row.backend_ms = '{"n":1}', 3.5, 2.25
    row.user_agent, row.watermark_key_id = "OpenAI/Python 2.0", "wm_1"

    async def run() -> None:
        log = RequestLog(engine)
        await log.write(row)
        await log.aclose()

    asyncio.run(run())
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(requests)).one()._mapping)
    assert {k: stored[k] for k in vars(row)} == vars(row)


def test_deliveries_are_marked_and_survive_a_refused_group(tmp_path: Path) -> None:
    engine = open_db(str(tmp_path / "log.sqlite"))

    async def run() -> None:
        log = RequestLog(engine)
        for rid in ("req_a", "req_b"):
            row = _row(rid)
            row.delivery = "sending"
            await log.write(row)
        log.mark("req_a", "delivered")
        # The next group holds a row the database refuses: the mark that rides with it is
        # committed on its own, not lost with someone else's row.
        refused = asyncio.gather(log.write(_row("req_a")), return_exceptions=True)
        log.mark("req_b", "client_gone")
        assert [type(e) for e in await refused] == [LogWriteError]
        log.mark("req_a", "partial")  # left for the close to commit
        await log.aclose()

    asyncio.run(run())
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(requests.c.id, requests.c.delivery)).all())
    assert stored == {"req_a": "partial", "req_b": "client_gone"}
