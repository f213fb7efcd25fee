"""The upstream backend's HTTP/1.1 client for a plain-http upstream (a model server on the
same host or network, such as vLLM): a keep-alive pool of asyncio connections, framed by h11.

Why not httpx here: at a model server's request rates the gateway's own CPU is what it adds
to each request, and on a small machine it shares that CPU with the model server. httpx's
pool re-scans every connection on each request and each reply, with a readability check
(two system calls) per idle connection: at 16 concurrent requests that was most of the
gateway's own time per request. Here an idle connection is taken from a stack in O(1), and
one the server closed is known from its stream's state, without a system call.

https upstreams and upstreams behind a configured proxy stay on httpx (its certificate
store and proxy settings), where the network's latency dwarfs this cost anyway.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11
import httpx

READ_CHUNK = 65536


@dataclass
class Reply:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before its reply was complete."""


# What a failed exchange with an upstream raises, on either client (OSError: timeouts and
# UpstreamClosed too).
TRANSPORT_ERRORS = (httpx.HTTPError, OSError, h11.ProtocolError)


def plain_http(base_url: str) -> bool:
    """Whether `base_url` is served here: http, and no proxy configured for its host."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxied = urllib.request.getproxies_environment().get("http")
    return not proxied or bool(urllib.request.proxy_bypass(parts.hostname))


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)

    def reusable(self) -> bool:
        """Still open at our end and the server's (its EOF is seen once the loop read it)."""
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class PlainHTTPClient:
    """POSTs JSON to one http:// origin over kept-alive connections."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        timeout_s: float,
        max_connections: int = 256,
        max_idle: int = 64,
    ) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        authority = parts.netloc.rsplit("@", 1)[-1]
        self.headers = [("Host", authority), ("Content-Type", "application/json")]
        self.headers += list(headers.items())
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def post(self, path: str, payload: Any) -> Reply:
        stream = await self.open(path, payload)
        try:
            return Reply(stream.status_code, await stream.read())
        finally:
            stream.close()

    async def open(self, path: str, payload: Any) -> PlainStream:
        """Send the request and read the reply's head; the body is read from the stream."""
        body = json.dumps(payload).encode()
        await self._slots.acquire()
        try:
            conn = await self._connection()
        except BaseException:
            self._slots.release()
            raise
        stream = PlainStream(self, conn)
        try:
            async with asyncio.timeout(self.timeout_s):
                stream.status_code = await self._send(conn, path, body)
        except BaseException:  # cancelled or failed mid-exchange: its state is unknown
            stream.close()
            raise
        return stream

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be closed
            if conn.reusable():
                return conn
            conn.close()
        async with asyncio.timeout(self.timeout_s):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Connection(reader, writer)

    async def _send(self, conn: _Connection, path: str, body: bytes) -> int:
        """Write the request; return the reply's status once its head is in."""
        headers = [*self.headers, ("Content-Length", str(len(body)))]
        request = h11.Request(method="POST", target=self.prefix + path, headers=headers)
        out = conn.h11.send(request) + conn.h11.send(h11.Data(data=body))
        conn.writer.write(out + conn.h11.send(h11.EndOfMessage()))
        await conn.writer.drain()
        while True:
            event = await _next_event(conn)
            if isinstance(event, h11.Response):
                return int(event.status_code)
            if not isinstance(event, h11.InformationalResponse):  # 1xx: the final one follows
                raise UpstreamClosed("the upstream closed the connection before its reply")

    def _done(self, conn: _Connection) -> None:
        """A reply is finished with: its connection back to the pool if both sides may send
        another request on it, else closed; its slot free."""
        done = conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE
        if done and len(self._idle) < self.max_idle and conn.reusable():
            conn.h11.start_next_cycle()
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


async def _next_event(conn: _Connection) -> Any:
    while True:
        event = conn.h11.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.h11.receive_data(await conn.reader.read(READ_CHUNK))


async def _body_part(conn: _Connection) -> bytes | None:
    """The reply body's next bytes, or None at its end."""
    event = await _next_event(conn)
    if isinstance(event, h11.Data):
        return bytes(event.data)
    if isinstance(event, h11.EndOfMessage):
        return None
    raise UpstreamClosed("the upstream closed the connection mid-reply")


class PlainStream:
    """One reply of a PlainHTTPClient, its body read as it comes. `close` (synchronous, so it
    may run in a cancelled task's cleanup) keeps the connection if the reply was read to its
    end, else drops it."""

    def __init__(self, client: PlainHTTPClient, conn: _Connection) -> None:
        self.client, self.conn = client, conn
        self.status_code = 0
        self._closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive; each wait for more is bounded by the timeout."""
        while True:
            async with asyncio.timeout(self.client.timeout_s):
                part = await _body_part(self.conn)
            if part is None:
                return
            yield part

    async def read(self) -> bytes:
        """The whole body (a plain loop: this is every unstreamed request's path)."""
        parts = []
        async with asyncio.timeout(self.client.timeout_s):
            while (part := await _body_part(self.conn)) is not None:
                parts.append(part)
        return b"".join(parts)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client._done(self.conn)


class HttpxStream:
    """The same over an httpx streamed response."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.status_code = int(response.status_code)
        self._closing: asyncio.Task[None] | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.response.aiter_raw():
            yield chunk

    async def read(self) -> bytes:
        return bytes(await self.response.aread())

    def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.response.aclose())


class UpstreamStream(Protocol):
    status_code: int

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    def close(self) -> None: ...


class HttpxClient:
    """The same `post` over httpx: for https upstreams and those behind a proxy."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        timeout_s: float,
        max_connections: int = 256,
    ) -> None:
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=min(64, max_connections),
        )
        self.client = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout_s, limits=limits
        )

    async def post(self, path: str, payload: Any) -> Reply:
        reply = await self.client.post(path, json=payload)
        return Reply(reply.status_code, reply.content)

    async def open(self, path: str, payload: Any) -> HttpxStream:
        request = self.client.build_request("POST", path, json=payload)
        return HttpxStream(await self.client.send(request, stream=True))

    async def aclose(self) -> None:
        await self.client.aclose()


def upstream_client(
    base_url: str, *, headers: dict[str, str], timeout_s: float
) -> PlainHTTPClient | HttpxClient:
    if plain_http(base_url):
        return PlainHTTPClient(base_url, headers=headers, timeout_s=timeout_s)
    return HttpxClient(base_url, headers=headers, timeout_s=timeout_s)
