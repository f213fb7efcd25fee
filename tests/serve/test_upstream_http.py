"""The upstream backend's plain-http client against real servers on real ports: connections
kept alive and reused, replies of every framing read whole, a connection the server closed
never reused, a dead or slow upstream a clear error."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from stillroom.errors import BackendError
from stillroom.serve.backends import UpstreamBackend
from stillroom.serve.schemas import CompletionRequest
from stillroom.serve.upstream_http import HttpxClient, PlainHTTPClient, plain_http
from tests.helpers.serve import free_port, running

pytestmark = pytest.mark.integration


async def _echo(request: Request) -> Response:
    """The body back, with the client's port (which connection it came on)."""
    body = await request.json()
    peer = request.client.port if request.client else 0
    mode = request.path_params["mode"]
    if mode == "chunked":  # no Content-Length: the body comes in chunks

        async def parts() -> Any:
            yield b'{"port": %d, ' % peer
            yield b'"got": %s}' % str(body["n"]).encode()

        return StreamingResponse(parts(), media_type="application/json")
    if mode == "slow":
        await asyncio.sleep(2)
    headers = {"Connection": "close"} if mode == "close" else {}
    return JSONResponse({"port": peer, "got": body["n"]}, headers=headers)


async def _completions(request: Request) -> Response:
    body = await request.json()
    choice = {"index": 0, "text": f"re: {body['prompt']}", "finish_reason": "length"}
    usage = {"prompt_tokens": 3, "completion_tokens": 2}
    return JSONResponse({"model": body["model"], "choices": [choice], "usage": usage})


APP = Starlette(
    routes=[
        Route("/v1/completions", _completions, methods=["POST"]),
        Route("/v1/{mode}", _echo, methods=["POST"]),
    ]
)


@pytest.fixture(scope="module")
def upstream() -> Any:
    with running(APP) as base:
        yield base


def _client(base: str, timeout_s: float = 30) -> PlainHTTPClient:
    return PlainHTTPClient(base, headers={"Authorization": "Bearer k"}, timeout_s=timeout_s)


def test_sequential_requests_share_one_kept_alive_connection(upstream: str) -> None:
    async def go() -> list[Any]:
        client = _client(upstream)
        try:
            return [(await client.post("/plain", {"n": i})).json() for i in range(20)]
        finally:
            await client.aclose()

    replies = asyncio.run(go())
    assert [r["got"] for r in replies] == list(range(20))
    assert len({r["port"] for r in replies}) == 1


def test_concurrent_requests_each_get_their_own_reply(upstream: str) -> None:
    async def go() -> tuple[list[Any], int]:
        client = _client(upstream)
        try:
            replies = await asyncio.gather(*(client.post("/plain", {"n": i}) for i in range(40)))
            return [r.json()["got"] for r in replies], len(client._idle)
        finally:
            await client.aclose()

    got, idle = asyncio.run(go())
    assert got == list(range(40))
    assert 1 <= idle <= 40  # the connections it opened are kept for the next requests


def test_a_chunked_reply_is_read_whole(upstream: str) -> None:
    async def go() -> Any:
        client = _client(upstream)
        try:
            first = await client.post("/chunked", {"n": 7})
            second = await client.post("/chunked", {"n": 8})  # the same connection, after
            return first.json(), second.json()
        finally:
            await client.aclose()

    first, second = asyncio.run(go())
    assert (first["got"], second["got"]) == (7, 8) and first["port"] == second["port"]


@pytest.mark.parametrize("kind", ["plain", "httpx"])
def test_an_opened_reply_streams_its_chunks_and_a_stream_left_early_frees_its_slot(
    upstream: str, kind: str
) -> None:
    async def go() -> tuple[list[bytes], int]:
        # one connection slot on either client: a stream that kept it would block the next
        client: Any = (
            PlainHTTPClient(upstream, headers={}, timeout_s=30, max_connections=1)
            if kind == "plain"
            else HttpxClient(upstream, headers={}, timeout_s=30, max_connections=1)
        )
        try:
            stream = await client.open("/chunked", {"n": 7})
            chunks = [c async for c in stream.chunks()]
            stream.close()
            left = await client.open("/chunked", {"n": 8})
            left.close()  # before its body: the connection is dropped, not pooled
            again = await client.post("/chunked", {"n": 9})
            return chunks, again.json()["got"]
        finally:
            await client.aclose()

    chunks, got = asyncio.run(asyncio.wait_for(go(), 20))
    assert b"".join(chunks).startswith(b'{"port": ') and b'"got": 7}' in chunks[-1]
    assert got == 9


def test_a_connection_the_server_closes_is_not_reused(upstream: str) -> None:
    async def go() -> list[Any]:
        client = _client(upstream)
        try:
            return [(await client.post("/close", {"n": i})).json() for i in range(3)]
        finally:
            await client.aclose()

    replies = asyncio.run(go())
    assert [r["got"] for r in replies] == [0, 1, 2]
    assert len({r["port"] for r in replies}) == 3


def test_a_slow_upstream_times_out_and_its_connection_is_dropped(upstream: str) -> None:
    async def go() -> tuple[int, Any]:
        client = _client(upstream, timeout_s=0.3)
        try:
            with pytest.raises(TimeoutError):
                await client.post("/slow", {"n": 1})
            idle = len(client._idle)
            return idle, (await client.post("/plain", {"n": 2})).json()
        finally:
            await client.aclose()

    idle, after = asyncio.run(go())
    assert idle == 0 and after["got"] == 2


def test_the_backend_answers_through_it_and_reports_a_dead_upstream(upstream: str) -> None:
    async def go(base: str) -> Any:
        backend = UpstreamBackend(base, api_key="k")
        try:
            body = CompletionRequest(model="m", prompt="hello", max_tokens=2)
            return await backend.completion(body)
        finally:
            await backend.aclose()

    answer = asyncio.run(go(upstream))
    assert answer.choices[0].text == "re: hello" and answer.completion_tokens == 2
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(BackendError, match="unreachable: ConnectionRefusedError"):
        asyncio.run(go(dead))


def test_only_plain_http_without_a_proxy_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    local = f"http://127.0.0.1:{free_port()}/v1"
    assert plain_http(local)
    assert not plain_http("https://api.example.com/v1")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    assert not plain_http("http://models.example/v1")
    monkeypatch.setenv("no_proxy", "models.example")
    assert plain_http("http://models.example/v1")


def test_a_connection_the_server_dropped_while_idle_is_not_reused() -> None:
    """As a server's keep-alive timeout does: the reply says nothing of closing, then the
    server hangs up. The next request must go on a new connection, not fail on the old."""
    peers: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[1])
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        body = b'{"ok": true}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    async def go() -> list[Any]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = _client(f"http://127.0.0.1:{port}/v1")
        try:
            replies = []
            for _ in range(3):
                replies.append((await client.post("/x", {"n": 0})).json())
                await asyncio.sleep(0.2)  # the server hangs up meanwhile
            return replies
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()

    assert asyncio.run(go()) == [{"ok": True}] * 3
    assert len(set(peers)) == 3
