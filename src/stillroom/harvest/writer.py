"""The store writer: a child process that encodes teacher signals and commits calls.

A harvest against a fast API is CPU-bound on the event loop; encoding top-k signals and
committing SQLite transactions cost about as much per call as the HTTP client itself. The
writer does that work on another core. Messages arrive in order over a pipe, and each call
is committed before the next message is read.

Crash behaviour: the writer shares the run folder's lock (it is forked with the lock's file
description), so no new harvest starts until it is done. If the harvest process is killed,
the writer still drains the pipe: every call that finished before the kill is committed.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from stillroom.errors import StoreError
from stillroom.harvest.store import CallMeta, RunStore
from stillroom.teachers.base import Completion


class StoreWriter:
    """The harvest's side: queue writes; `close` waits until all are committed."""

    def __init__(self, path: Path) -> None:
        ctx = mp.get_context("fork")  # inherit the run lock; see the module docstring
        self._recv, self._send = ctx.Pipe(duplex=False)
        self._status_recv, status_send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_serve,
            args=(path, self._recv, status_send, (self._send, self._status_recv)),
            name="stillroom-store-writer",
        )
        self._proc.start()
        status_send.close()
        self._recv.close()
        self._failed: str | None = None

    def reserve(self, key: str, usd: float) -> None:
        self._put(("reserve", key, usd))

    def write_ok(self, meta: CallMeta, comp: Completion, cost: float, replaces: bool) -> None:
        self._put(("ok", meta, comp, cost, replaces))

    def write_error(self, meta: CallMeta, error: str, cost: float, replaces: bool) -> None:
        self._put(("error", meta, error, cost, replaces))

    def _put(self, message: tuple[Any, ...]) -> None:
        self.check()
        self._send.send(message)

    def check(self) -> None:
        """Raise if the writer has failed (disk full, store corrupted): stop calling."""
        if self._failed is None and self._status_recv.poll():
            self._failed = _status_error(self._status_recv)
        if self._failed is not None:
            raise StoreError(self._failed)

    def close(self) -> None:
        """Wait until every queued write is committed; raise if any failed."""
        with contextlib.suppress(BrokenPipeError, OSError):  # a dead writer: reported below
            self._send.send(("close",))
        self._send.close()
        self._proc.join()
        if self._failed is None and self._status_recv.poll():
            self._failed = _status_error(self._status_recv)
        if self._failed is None and self._proc.exitcode != 0:
            self._failed = f"the store writer exited with code {self._proc.exitcode}"
        if self._failed is not None:
            raise StoreError(self._failed)


def _status_error(conn: Connection) -> str | None:
    try:
        kind, detail = conn.recv()
    except EOFError:
        return None
    return str(detail) if kind == "failed" else None


def _serve(
    path: Path, inbox: Connection, status: Connection, parent_ends: tuple[Connection, ...]
) -> None:
    for end in parent_ends:  # forked copies: holding the inbox's send end would hide EOF
        end.close()
    store = None
    try:
        store = RunStore(path)
        while True:
            try:
                message = inbox.recv()
            except EOFError:  # the harvest process is gone: everything sent is written
                break
            kind = message[0]
            if kind == "close":
                break
            if kind == "reserve":
                store.reserve(message[1], message[2])
            elif kind == "ok":
                store.write_ok(message[1], message[2], message[3], replaces=message[4])
            else:
                store.write_error(message[1], message[2], message[3], replaces=message[4])
        status.send(("closed", None))
    except Exception as e:  # report, then exit non-zero: the harvest stops calling
        status.send(("failed", f"{path}: writing the harvest store failed: {e}"))
        sys.exit(1)
    finally:
        if store is not None:
            store.close()
