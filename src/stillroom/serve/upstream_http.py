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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11

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
        body = json.dumps(payload).encode()
        async with self._slots:
            conn = await self._connection()
            try:
                async with asyncio.timeout(self.timeout_s):
                    reply = await self._exchange(conn, path, body)
            except BaseException:  # cancelled or failed mid-exchange: its state is unknown
                conn.close()
                raise
            self._release(conn)
            return reply

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be closed
            if conn.reusable():
                return conn
            conn.close()
        async with asyncio.timeout(self.timeout_s):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Connection(reader, writer)

    async def _exchange(self, conn: _Connection, path: str, body: bytes) -> Reply:
        headers = [*self.headers, ("Content-Length", str(len(body)))]
        request = h11.Request(method="POST", target=self.prefix + path, headers=headers)
        out = conn.h11.send(request) + conn.h11.send(h11.Data(data=body))
        conn.writer.write(out + conn.h11.send(h11.EndOfMessage()))
        await conn.writer.drain()
        status, chunks = 0, []
        while True:
            event = conn.h11.next_event()
            if event is h11.NEED_DATA:
                conn.h11.receive_data(await conn.reader.read(READ_CHUNK))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Reply(status, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise UpstreamClosed("the upstream closed the connection mid-reply")
            # InformationalResponse (1xx): skipped; the final response follows

    def _release(self, conn: _Connection) -> None:
        """Back to the pool if both sides may send another request on it, else closed."""
        done = conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE
        if done and len(self._idle) < self.max_idle and conn.reusable():
            conn.h11.start_next_cycle()
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class HttpxClient:
    """The same `post` over httpx: for https upstreams and those behind a proxy."""

    def __init__(self, base_url: str, *, headers: dict[str, str], timeout_s: float) -> None:
        import httpx

        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self.client = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout_s, limits=limits
        )

    async def post(self, path: str, payload: Any) -> Reply:
        reply = await self.client.post(path, json=payload)
        return Reply(reply.status_code, reply.content)

    async def aclose(self) -> None:
        await self.client.aclose()


def upstream_client(
    base_url: str, *, headers: dict[str, str], timeout_s: float
) -> PlainHTTPClient | HttpxClient:
    if plain_http(base_url):
        return PlainHTTPClient(base_url, headers=headers, timeout_s=timeout_s)
    return HttpxClient(base_url, headers=headers, timeout_s=timeout_s)
