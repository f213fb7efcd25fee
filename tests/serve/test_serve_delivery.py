"""Whether each reply reached its client, in the gateway's log: a real gateway process (or the
app under a real server) and real clients that stay, hang up before a slow reply, or leave a
stream midway; SQLite and PostgreSQL. The served-answer test then leaves out, and counts,
what no client received."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from stillroom.serve.accounts import create_account
from stillroom.serve.app import create_app
from stillroom.serve.backends import UpstreamBackend
from stillroom.serve.db import open_db, requests
from stillroom.testing.fake_config import FakeServerConfig
from stillroom.testing.fake_openai import start_fake_server
from stillroom.trace.served import read_served
from tests.helpers.replicas import fake_upstream, gateway_process
from tests.helpers.serve import running

UPSTREAM_LATENCY = 1.0  # s: long enough for a client to hang up before the reply


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "gateway.sqlite")
    return str(request.getfixturevalue("pg_database"))


def new_key(db: str, name: str = "acme") -> str:
    engine = open_db(db)
    try:
        return create_account(engine, name)[1].key
    finally:
        engine.dispose()


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}]} | extra


def deliveries(db: str, settle_s: float = 15.0) -> dict[str, str | None]:
    """Each logged prompt's delivery, once no reply is still going out (the gateway marks
    them after the reply, in the background)."""
    engine = open_db(db, migrate=False)
    try:
        deadline = time.monotonic() + settle_s
        while True:
            with engine.connect() as conn:
                rows = conn.execute(sa.select(requests.c.messages, requests.c.delivery)).all()
            found = {json.loads(m)[0]["content"]: d for m, d in rows}
            if "sending" not in found.values() or time.monotonic() > deadline:
                return found
            time.sleep(0.05)
    finally:
        engine.dispose()


def hang_up_before_reply(root: str, key: str, content: str) -> None:
    """A client that sends its request whole, then closes its socket before any reply."""
    body = json.dumps(chat_body(content)).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    host, port = root.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + body)
        time.sleep(UPSTREAM_LATENCY / 4)  # the gateway has it, and is waiting on upstream
    # closed here, long before the upstream answers


def test_a_real_gateway_marks_what_each_client_received(db: str) -> None:
    key = new_key(db)
    headers = {"Authorization": f"Bearer {key}"}
    with fake_upstream(UPSTREAM_LATENCY) as upstream, gateway_process(upstream, db) as root:
        kept = httpx.post(
            f"{root}/v1/chat/completions", json=chat_body("kept"), headers=headers, timeout=30
        )
        assert kept.status_code == 200, kept.text
        hang_up_before_reply(root, key, "gone")
        streamed = httpx.post(
            f"{root}/v1/chat/completions",
            json=chat_body("streamed", stream=True),
            headers=headers,
            timeout=30,
        )
        assert streamed.text.rstrip().endswith("data: [DONE]")
        # The hung-up request is answered by upstream a second after it arrived; then the
        # gateway finds its client gone.
        marked = deliveries(db)
        assert marked == {"kept": "delivered", "gone": "client_gone", "streamed": "delivered"}
        # Each row was committed before its reply, as ever: its id is the reply's.
        assert kept.json()["id"].startswith("chatcmpl-")

    served = read_served(db, ["acme"])
    assert [s.messages[0][1] for s in served] == ["kept", "streamed"]
    assert served.undelivered_skipped == 1


@contextmanager
def gateway_in_thread(db: str, stream_interval: float = 0.0) -> Iterator[tuple[str, str]]:
    """The gateway app under a real server in this process, before a fake upstream whose
    streams send an event each `stream_interval` s: (its /v1 URL, an account's key)."""
    key = new_key(db)
    engine = open_db(db)
    with start_fake_server(FakeServerConfig(stream_interval=stream_interval)) as upstream:
        backend = UpstreamBackend(upstream.base_url, api_key=None)
        try:
            with running(create_app(engine, backend)) as url:
                yield url, key
        finally:
            engine.dispose()


def test_a_stream_left_midway_is_partial_and_left_out(db: str) -> None:
    # the upstream's stream passes through as it comes, on a slow link: an event a 0.1 s
    with gateway_in_thread(db, stream_interval=0.1) as (url, key):
        headers = {"Authorization": f"Bearer {key}"}
        # n = 8 choices, several events each, and [DONE]; the client leaves after the first.
        cut = chat_body("cut", stream=True, n=8, max_tokens=4)
        with httpx.stream(
            "POST", f"{url}/chat/completions", json=cut, headers=headers, timeout=30
        ) as reply:
            assert reply.status_code == 200
            first = next(line for line in reply.iter_lines() if line)
            assert first.startswith("data: {")
        # and one stream read to its end, on the same slow link
        whole = httpx.post(
            f"{url}/chat/completions",
            json=chat_body("whole", stream=True, max_tokens=4),
            headers=headers,
            timeout=30,
        )
        assert whole.text.rstrip().endswith("data: [DONE]")
        assert deliveries(db) == {"cut": "partial", "whole": "delivered"}

    served = read_served(db, ["acme"])
    assert [s.messages[0][1] for s in served] == ["whole"]
    # the cut request's row holds what the upstream had sent when the client left: the
    # first of its eight answers at least, not all of them
    assert 1 <= served.undelivered_skipped < 8


def stream_events(reply: httpx.Response) -> list[Any]:
    return [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")]


def test_an_upstream_stream_passes_through_as_it_comes_and_is_logged_whole(db: str) -> None:
    with gateway_in_thread(db, stream_interval=0.2) as (url, key):
        headers = {"Authorization": f"Bearer {key}"}
        body = chat_body("tell", stream=True, max_tokens=8)
        started = time.perf_counter()
        with httpx.stream(
            "POST", f"{url}/chat/completions", json=body, headers=headers, timeout=30
        ) as reply:
            lines = reply.iter_lines()
            first = next(line for line in lines if line)
            first_s = time.perf_counter() - started
            rest = [line for line in lines if line]
        whole_s = time.perf_counter() - started
        # the first event came while the upstream was still generating: passed through
        assert first.startswith("data: {") and first_s < whole_s / 2, (first_s, whole_s)
        assert rest[-1] == "data: [DONE]"
        events = [json.loads(x[6:]) for x in [first, *rest[:-1]]]
        said = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
        assert all("usage" not in e for e in events)  # not asked for, not sent
        # with usage asked for: the last event before [DONE] carries it, and no choices
        asked = httpx.post(
            f"{url}/chat/completions",
            json=chat_body("count", stream=True, max_tokens=8, stream_options={
                "include_usage": True}),
            headers=headers,
            timeout=30,
        )  # fmt: skip
        last = stream_events(asked)[-1]
        assert last["choices"] == [] and last["usage"]["completion_tokens"] == 8
        assert deliveries(db) == {"tell": "delivered", "count": "delivered"}

    engine = open_db(db, migrate=False)
    try:
        with engine.connect() as conn:
            rows = {
                json.loads(r.messages)[0]["content"]: r
                for r in conn.execute(sa.select(requests)).all()
            }
    finally:
        engine.dispose()
    tell = rows["tell"]
    # the row is the stream's: its id, the text the client was sent, the upstream's usage
    assert tell.id == events[0]["id"] and all(e["id"] == tell.id for e in events)
    assert json.loads(tell.response_text) == [said] and said
    assert tell.completion_tokens == 8 and tell.prompt_tokens > 0
    assert tell.error is None and tell.backend_ms > 0 and tell.latency_ms >= tell.backend_ms
