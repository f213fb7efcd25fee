"""The request log writer: every answered request is one committed row before its reply goes.

Rows are committed in groups (one transaction for whatever arrived while the previous one
was being written), so a busy server pays one commit per group, not per request. Each
request waits for its own group's commit: if that fails, the request fails with a 500 and
the client knows; nothing is answered that the log does not hold.

How each reply then went out (`mark`: delivered, client gone, partial) is committed with a
later group, and nobody waits for it: the client already has its reply, or never will. A
stream passed through from an upstream is logged the same way in two steps: its row, with the
request, before the first byte goes out; what was answered (`finish`) once it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import asdict, dataclass, fields
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stillroom.errors import LogWriteError as LogWriteError  # its home before the tree
from stillroom.serve.db import in_process, requests

MAX_GROUP = 256
# What `finish` records of a passed-through stream, once it has ended.
FINISHED = ("response_text", "prompt_tokens", "completion_tokens", "backend_ms", "latency_ms",
            "error")  # fmt: skip
# Free text a client controls outside the request body, cut to a fixed size: a 401 costs a
# client nothing, so neither may its log row cost the log more than this.
FIELD_LIMITS = {"user_agent": 256, "error": 1024, "client_addr": 64, "model": 200}


@dataclass
class LogRow:
    id: str
    created_at: float
    endpoint: str
    status: int
    account_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    messages: str | None = None
    prompt: str | None = None
    params: str | None = None
    response_text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    latency_ms: float | None = None
    backend_ms: float | None = None
    client_addr: str | None = None
    user_agent: str | None = None
    watermark_key_id: str | None = None
    delivery: str | None = None  # see `db.DELIVERY`


def bounded(row: LogRow) -> LogRow:
    """The row with each free-text field cut to its limit (in place)."""
    for name, limit in FIELD_LIMITS.items():
        value = getattr(row, name)
        if value is not None and len(value) > limit:
            setattr(row, name, value[: limit - 1] + "…")
    return row


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class RequestLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: list[tuple[LogRow, asyncio.Future[None]]] = []
        self._marks: list[tuple[str, str]] = []  # (delivery, request id), for the next group
        self._finished: list[dict[str, Any]] = []  # a passed-through stream's answer, ditto
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a group is being committed
        self.written = 0
        # SQLite commits a group in well under a millisecond: see `in_process`.
        self._inline = in_process(engine)
        # And on SQLite the rows go straight to the driver: one prepared INSERT run over
        # plain tuples costs about half of what SQLAlchemy's statement execution does, and
        # this runs on the event loop, in the burst of replies a finished batch releases.
        self._columns = [f.name for f in fields(LogRow)]
        self._sql = (
            f"INSERT INTO {requests.name} ({', '.join(self._columns)}) "
            f"VALUES ({', '.join('?' * len(self._columns))})"
        )
        self._values = attrgetter(*self._columns)
        self._mark_sql = f"UPDATE {requests.name} SET delivery = ? WHERE id = ?"
        self._finish_sql = (
            f"UPDATE {requests.name} SET {', '.join(f'{c} = ?' for c in FINISHED)} WHERE id = ?"
        )
        self._mark = (
            requests.update()
            .where(requests.c.id == sa.bindparam("rid"))
            .values(delivery=sa.bindparam("state"))
        )
        self._finish = (
            requests.update()
            .where(requests.c.id == sa.bindparam("rid"))
            .values({c: sa.bindparam(c) for c in FINISHED})
        )
        self._raw: Any = None

    async def write(self, row: LogRow) -> None:
        """Return once the row is committed; raise if it could not be."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((bounded(row), future))
        self._start()
        await future

    def mark(self, request_id: str, delivery: str) -> None:
        """Record how a committed row's reply went out (`db.DELIVERY`). Committed with the
        next group; never awaited: if it is lost, the row stays "sending", not received."""
        self._marks.append((delivery, request_id))
        self._start()

    def finish(
        self,
        request_id: str,
        *,
        response_text: str,
        prompt_tokens: int,
        completion_tokens: int,
        backend_ms: float,
        latency_ms: float,
        error: str | None,
    ) -> None:
        """Record what a passed-through stream answered, like `mark`: committed with the next
        group, never awaited."""
        answer = {
            "response_text": response_text,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "backend_ms": backend_ms,
            "latency_ms": latency_ms,
            "error": error,
        }
        assert answer.keys() == set(FINISHED)  # the columns the UPDATE writes, each by name
        self._finished.append({"rid": request_id, **answer})
        self._start()

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._writer())
        self._wake.set()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending or self._marks or self._finished:
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                marks, self._marks = self._marks[:MAX_GROUP], self._marks[MAX_GROUP:]
                ends, self._finished = self._finished[:MAX_GROUP], self._finished[MAX_GROUP:]
                self._busy = True
                try:
                    await self._commit([row for row, _ in group], marks, ends)
                except Exception as e:  # the database's own error: every waiter gets it
                    for _, future in group:
                        if not future.done():
                            future.set_exception(LogWriteError(str(e).splitlines()[0]))
                    if group and (marks or ends):  # not lost for another request's row
                        with contextlib.suppress(Exception):
                            await self._commit([], marks, ends)
                else:
                    self.written += len(group)
                    for _, future in group:
                        if not future.done():
                            future.set_result(None)
                finally:
                    self._busy = False

    async def _commit(
        self, rows: list[LogRow], marks: list[tuple[str, str]], ends: list[dict[str, Any]]
    ) -> None:
        if self._inline:
            self._insert(rows, marks, ends)
        else:
            await asyncio.to_thread(self._insert, rows, marks, ends)

    def _insert(
        self, rows: list[LogRow], marks: list[tuple[str, str]], ends: list[dict[str, Any]]
    ) -> None:
        """One transaction: the new rows, then the answers and delivery of earlier ones."""
        if not self._inline:
            with self.engine.begin() as conn:
                if rows:
                    conn.execute(requests.insert(), [asdict(r) for r in rows])
                if ends:
                    conn.execute(self._finish, ends)
                if marks:
                    conn.execute(self._mark, [{"state": d, "rid": i} for d, i in marks])
            return
        if self._raw is None:  # the pool's connection, kept: it has the engine's pragmas
            self._raw = self.engine.raw_connection()
        driver = self._raw.driver_connection
        try:
            if rows:
                driver.executemany(self._sql, [self._values(r) for r in rows])
            if ends:
                driver.executemany(
                    self._finish_sql, [(*(e[c] for c in FINISHED), e["rid"]) for e in ends]
                )
            if marks:
                driver.executemany(self._mark_sql, marks)
            driver.commit()
        except BaseException:
            driver.rollback()  # nothing of a refused group stays pending for the next one
            raise

    async def aclose(self) -> None:
        if self._task is not None:
            while self._pending or self._marks or self._finished or self._busy:
                await asyncio.sleep(0.001)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
