"""A real gateway on a real port for tests: uvicorn in a thread, SQLite or PostgreSQL."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from stillroom.serve.backends import LocalBackend

# CI (.ci/run) starts a PostgreSQL server and names it here; without it the PostgreSQL
# variants of the gateway tests are skipped.
PG_URL_ENV = "STILLROOM_TEST_PG_URL"


def fresh_pg_database() -> str:
    """A new, empty database on the test PostgreSQL server; its URL."""
    base = os.environ[PG_URL_ENV]
    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.rsplit("/", 1)[0] + "/" + name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` on a free port; yield its /v1 base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test gateway did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class CountingBackend(LocalBackend):
    """The real local backend, counting the requests that reach the model."""

    calls = 0

    async def chat(self, body: Any) -> Any:
        self.calls += 1
        return await super().chat(body)

    async def completion(self, body: Any) -> Any:
        self.calls += 1
        return await super().completion(body)
