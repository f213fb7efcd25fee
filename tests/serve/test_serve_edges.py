"""The gateway at its edges, against a real tiny model on a real port: hostile bodies, floods of
keyless requests, text a database cannot store, absurd token counts, a dead model process.

Every refusal must come in OpenAI's error envelope, before any work it does not need, and be
written to the request log.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from stillroom.errors import AccountError
from stillroom.serve import accounts as acc
from stillroom.serve.app import create_app
from stillroom.serve.backends import LocalBackend, UpstreamBackend
from stillroom.serve.db import open_db, requests
from stillroom.serve.gateway import ServeSettings
from stillroom.teachers.local import LocalTeacher
from tests.helpers.serve import CountingBackend, running
from tests.helpers.tiny_models import make_tiny_lm

pytestmark = pytest.mark.integration

LIMIT = 64  # the local backend's max_tokens limit in these tests
MB = 1 << 20


class BodyMeter:
    """ASGI wrapper counting the request-body bytes the app pulled from the server."""

    def __init__(self, app: Any) -> None:
        self.app, self.read = app, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny") / "lm")


@pytest.fixture(scope="module")
def teacher(lm: Path) -> LocalTeacher:
    return LocalTeacher.load(str(lm), batch_size=8)


class Served:
    def __init__(self, url: str, engine: sa.Engine, backend: Any, meter: BodyMeter) -> None:
        self.url, self.engine, self.backend, self.meter = url, engine, backend, meter
        self.base = url.removesuffix("/v1")

    def key(self, name: str = "acme", **limits: Any) -> str:
        return acc.create_account(self.engine, name, **limits)[1].key

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(requests))]


@contextmanager
def serve(engine: sa.Engine, backend: Any, **settings: Any) -> Iterator[Served]:
    meter = BodyMeter(create_app(engine, backend, ServeSettings(**settings)))
    try:
        with running(meter) as url:
            yield Served(url, engine, backend, meter)
    finally:
        engine.dispose()


@pytest.fixture
def gateway(teacher: LocalTeacher, tmp_path: Path) -> Iterator[Served]:
    backend = CountingBackend(teacher, default_max_tokens=8, max_tokens_limit=LIMIT)
    engine = open_db(str(tmp_path / "gateway.sqlite"))
    with serve(engine, backend, default_max_tokens=8, max_body_bytes=MB) as gw:
        yield gw


def post(gw: Served, body: Any, key: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, bytes | Iterator) else json.dumps(body).encode()
    return httpx.post(f"{gw.url}/chat/completions", content=data, headers=headers, timeout=60)


def envelope(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text[:300]
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return dict(error)


def chat(gw: Served, **extra: Any) -> dict[str, Any]:
    return {"model": gw.backend.model_id, "messages": [{"role": "user", "content": "hi"}]} | extra


def chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


def test_a_keyless_body_is_never_read_and_a_big_one_is_cut_off(gateway: Served) -> None:
    big = 32 * MB
    keyless = post(gateway, chunks(big))  # streamed: no Content-Length to refuse up front
    assert envelope(keyless, 401)["code"] == "missing_api_key"
    wrong = post(gateway, b"{" + b" " * big + b"}", "sr-key_000000000000-wrong")
    assert envelope(wrong, 401)["code"] == "invalid_api_key"
    assert gateway.meter.read == 0  # the key is checked before a byte of the body is read
    key = gateway.key()
    declared = post(gateway, b" " * (2 * MB), key)  # refused on its Content-Length
    assert envelope(declared, 413)["code"] == "request_too_large"
    streamed = post(gateway, chunks(big), key)  # refused once the limit is passed
    assert envelope(streamed, 413)["code"] == "request_too_large"
    assert gateway.meter.read <= 2 * MB  # reading stopped at the limit, not at 32 MB
    assert post(gateway, chat(gateway), key).status_code == 200  # a normal body still passes
    assert sorted(r["status"] for r in gateway.rows()) == [200, 401, 401, 413, 413]


def test_keyless_floods_are_limited_per_address_and_logged_bounded(
    teacher: LocalTeacher, tmp_path: Path
) -> None:
    backend = CountingBackend(teacher, default_max_tokens=8, max_tokens_limit=LIMIT)
    engine = open_db(str(tmp_path / "gateway.sqlite"))
    with serve(engine, backend, unauthenticated_rpm=3) as gw:
        agent = {"User-Agent": "x" * 60_000}
        keyless = [post(gw, chat(gw), headers=agent) for _ in range(4)]
        bad = [post(gw, chat(gw), "sr-key_000000000000-wrong", headers=agent) for _ in range(2)]
        assert [r.status_code for r in keyless + bad] == [401, 401, 401, 429, 429, 429]
        limited = envelope(keyless[-1], 429)
        assert limited["type"] == "rate_limit_error" and int(keyless[-1].headers["retry-after"])
        key = gw.key()  # a good key from the same address is not held back
        assert post(gw, chat(gw), key, headers=agent).status_code == 200
        rows = gw.rows()
        assert len(rows) == 7
        assert all(len(r["user_agent"]) <= 256 for r in rows)
        assert all(len(r["error"] or "") <= 1024 for r in rows)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"messages": [{"role": "user", "content": "a\ud800b"}]}, "messages.0.content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
            "messages.0.content",
        ),
        ({"stop": ["\udfff"]}, "stop"),
        ({"user": "\ud800"}, "user"),
    ],
)
def test_lone_surrogates_are_refused_before_any_reservation(
    gateway: Served, extra: dict[str, Any], param: str
) -> None:
    key = gateway.key(tpm_limit=200)
    for _ in range(3):  # each would reserve 8 x 16 tokens of the 200 a minute if admitted
        refused = post(gateway, chat(gateway, n=16, max_tokens=8) | extra, key)
        error = envelope(refused, 400)
        assert error["type"] == "invalid_request_error" and error["param"].startswith(param)
        assert "surrogate" in error["message"]
    assert gateway.backend.calls == 0
    assert post(gateway, chat(gateway, n=16, max_tokens=8), key).status_code == 200
    assert sorted(r["status"] for r in gateway.rows()) == [200, 400, 400, 400]


def test_max_tokens_above_the_local_limit_is_refused(gateway: Served) -> None:
    key = gateway.key()
    for field in ("max_tokens", "max_completion_tokens"):
        refused = post(gateway, chat(gateway, **{field: 10**9}), key)
        error = envelope(refused, 400)
        assert error["param"] == field and str(LIMIT) in error["message"]
    assert gateway.backend.calls == 0
    assert post(gateway, chat(gateway, max_tokens=LIMIT), key).status_code == 200


def test_max_tokens_above_the_upstream_cap_is_never_forwarded(
    gateway: Served, tmp_path: Path
) -> None:
    upstream = UpstreamBackend(gateway.url, api_key=gateway.key(), max_tokens_limit=32)
    engine = open_db(str(tmp_path / "proxy.sqlite"))
    with serve(engine, upstream) as proxy:
        key = proxy.key()
        refused = post(proxy, chat(gateway, max_tokens=10**9), key)
        assert "32" in envelope(refused, 400)["message"]
        assert post(proxy, chat(gateway, max_tokens=4), key).status_code == 200
    assert gateway.backend.calls == 1


def test_a_dead_model_process_is_a_503_not_the_clients_fault(lm: Path, tmp_path: Path) -> None:
    from stillroom.teachers.process import ProcessTeacher

    teacher = ProcessTeacher(str(lm), batch_size=2, threads=1)
    backend = LocalBackend(teacher, default_max_tokens=4, max_tokens_limit=LIMIT)
    engine = open_db(str(tmp_path / "gateway.sqlite"))
    with serve(engine, backend) as gw:
        key = gw.key()
        assert post(gw, chat(gw), key).status_code == 200
        for child in multiprocessing.active_children():
            if child.name == "stillroom-model":
                child.kill()
                child.join()
        error = envelope(post(gw, chat(gw), key), 503)
        assert error["type"] == "api_error" and error["code"] == "backend_unavailable"
        assert sorted(r["status"] for r in gw.rows()) == [200, 503]


def test_an_account_cannot_be_named_like_an_account_id(tmp_path: Path) -> None:
    engine = open_db(str(tmp_path / "gateway.sqlite"))
    victim, _ = acc.create_account(engine, "victim")
    with pytest.raises(AccountError, match="account id"):
        acc.create_account(engine, victim.id)
    with pytest.raises(AccountError, match="account id"):
        acc.create_account(engine, "acct_0123456789abcdef")
    assert [a.name for a in acc.list_accounts(engine)] == ["victim"]
    assert acc.get_account(engine, victim.id).name == "victim"


def test_api_docs_and_schema_are_not_served(gateway: Served) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        reply = httpx.get(gateway.base + path)
        assert envelope(reply, 404)["code"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"model": "\xff\xfe"}',
        b"{not json",
        b"[1, 2]",
        b"",
    ],
    ids=["deep", "not-utf8", "not-json", "not-an-object", "empty"],
)
def test_bad_bodies_get_the_envelope_and_a_log_row(gateway: Served, body: bytes) -> None:
    error = envelope(post(gateway, body, gateway.key()), 400)
    assert error["type"] == "invalid_request_error"
    assert [r["status"] for r in gateway.rows()] == [400]
    assert gateway.backend.calls == 0


def test_unknown_routes_and_methods_get_the_envelope(gateway: Served) -> None:
    assert envelope(httpx.get(f"{gateway.url}/nothing-here"), 404)["code"] == "not_found"
    wrong = httpx.get(f"{gateway.url}/chat/completions")
    assert envelope(wrong, 405)["code"] == "method_not_allowed"
