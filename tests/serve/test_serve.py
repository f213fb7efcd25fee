"""The gateway against a real tiny model on a real port, through the official openai client.

Every test runs on SQLite, and on PostgreSQL when CI names a server (STILLROOM_TEST_PG_URL).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from stillroom.serve import accounts as acc
from stillroom.serve.app import create_app
from stillroom.serve.backends import LocalBackend
from stillroom.serve.db import open_db, requests
from stillroom.serve.gateway import ServeSettings
from stillroom.teachers.local import LocalTeacher
from tests.helpers.serve import CountingBackend, running
from tests.helpers.tiny_models import make_tiny_lm

pytestmark = pytest.mark.integration

ADMIN = "admin-secret-token"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> LocalTeacher:
    path = make_tiny_lm(tmp_path_factory.mktemp("tiny") / "lm")
    return LocalTeacher.load(str(path), batch_size=8)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "gateway.sqlite")
    return str(request.getfixturevalue("pg_database"))


class Gateway:
    def __init__(self, url: str, engine: sa.Engine, backend: CountingBackend) -> None:
        self.url, self.engine, self.backend = url, engine, backend

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0)

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(requests))]


@pytest.fixture
def gateway(teacher: LocalTeacher, db_url: str) -> Iterator[Gateway]:
    engine = open_db(db_url)
    backend = CountingBackend(teacher, default_max_tokens=8, max_tokens_limit=64)
    app = create_app(engine, backend, ServeSettings(admin_token=ADMIN, default_max_tokens=8))
    with running(app) as url:
        yield Gateway(url, engine, backend)
    engine.dispose()


def new_key(gw: Gateway, name: str = "acme", **limits: Any) -> str:
    _, key = acc.create_account(gw.engine, name, **limits)
    return key.key


def test_chat_completions_and_models_through_the_openai_client(gateway: Gateway) -> None:
    client = gateway.client(new_key(gateway))
    model = client.models.list().data[0].id
    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=6,
        n=2,
        seed=3,
        logprobs=True,
        top_logprobs=3,
        user="u1",
    )
    assert len(chat.choices) == 2
    assert chat.usage is not None and chat.usage.completion_tokens > 0
    # A sampled choice may stop at once (the tiny model's end token first: how often depends
    # on whether the two choices were batched together), and then has no token to report.
    assert any(choice.message.content for choice in chat.choices)
    for choice in chat.choices:
        assert choice.finish_reason in ("stop", "length")
        content = (choice.logprobs.content if choice.logprobs else None) or []
        assert content or not choice.message.content, "asked for logprobs"
        assert "".join(t.token for t in content) == (choice.message.content or "")
        assert all(len(t.top_logprobs) == 3 for t in content)
        assert all(t.logprob <= 0 for t in content)
    text = client.completions.create(model=model, prompt="The quick", max_tokens=5, logprobs=2)
    assert text.choices[0].logprobs is not None
    assert "".join(text.choices[0].logprobs.tokens or []) == text.choices[0].text
    rows = gateway.rows()
    assert [r["endpoint"] for r in rows].count("chat.completions") == 1
    assert {r["id"] for r in rows} == {chat.id, text.id}
    row = next(r for r in rows if r["id"] == chat.id)
    assert json.loads(row["response_text"]) == [c.message.content for c in chat.choices]
    assert json.loads(row["messages"]) == [{"role": "user", "content": "hello there"}]
    assert json.loads(row["params"])["top_logprobs"] == 3
    assert row["status"] == 200 and row["completion_tokens"] == chat.usage.completion_tokens
    assert row["user_agent"].startswith("OpenAI/Python")


def test_seeded_requests_repeat_and_streams_match_whole_replies(gateway: Gateway) -> None:
    client = gateway.client(new_key(gateway))
    model = gateway.backend.model_id
    args: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": 8,
        "seed": 11,
    }
    whole = client.chat.completions.create(**args)
    again = client.chat.completions.create(**args)
    assert whole.choices[0].message.content == again.choices[0].message.content
    chunks = list(
        client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    text_chunks = list(
        client.completions.create(
            model=model, prompt="Once upon", max_tokens=6, seed=2, stream=True
        )
    )
    plain = client.completions.create(model=model, prompt="Once upon", max_tokens=6, seed=2)
    assert "".join(c.choices[0].text for c in text_chunks) == plain.choices[0].text
    assert len(gateway.rows()) == 5  # streams are logged like any request


def test_missing_invalid_revoked_and_blocked_keys_never_reach_the_model(gateway: Gateway) -> None:
    key = new_key(gateway)
    model = gateway.backend.model_id
    msg = [{"role": "user", "content": "hi"}]
    bad = httpx.post(f"{gateway.url}/chat/completions", json={"model": model, "messages": msg})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError):
        gateway.client("sr-key_000000000000-wrong").chat.completions.create(
            model=model, messages=msg
        )  # type: ignore[call-overload]
    base = gateway.url.removesuffix("/v1")
    blocked = httpx.post(
        f"{base}/admin/accounts/acme/block",
        headers={"Authorization": f"Bearer {ADMIN}"},
        json={"reason": "harvesting"},
    )
    assert blocked.status_code == 200
    with pytest.raises(openai.PermissionDeniedError, match="blocked"):
        gateway.client(key).chat.completions.create(model=model, messages=msg)  # type: ignore[call-overload]
    other = new_key(gateway, "beta")
    info = acc.list_keys(gateway.engine, "beta")[0]
    revoked = httpx.delete(
        f"{base}/admin/keys/{info.id}", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert revoked.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        gateway.client(other).chat.completions.create(model=model, messages=msg)  # type: ignore[call-overload]
    assert gateway.backend.calls == 0
    statuses = sorted(r["status"] for r in gateway.rows())
    assert statuses == [401, 401, 401, 403]
    # No key, whole or in part, is ever written to the log.
    dump = json.dumps(gateway.rows(), default=str)
    for k in (key, other):
        secret = k.split("-", 2)[2]  # sr-<key id>-<secret>
        assert k not in dump and secret not in dump


def test_rate_limits_hold_under_concurrency(gateway: Gateway) -> None:
    key = new_key(gateway, rpm_limit=10)
    model = gateway.backend.model_id

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"model": model, "prompt": "hi", "max_tokens": 2}
            headers = {"Authorization": f"Bearer {key}"}
            return await asyncio.gather(
                *(
                    client.post(f"{gateway.url}/completions", json=body, headers=headers)
                    for _ in range(40)
                )
            )

    replies = asyncio.run(fire())
    ok = [r for r in replies if r.status_code == 200]
    limited = [r for r in replies if r.status_code == 429]
    assert len(ok) == 10 and len(limited) == 30
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert limited[0].json()["error"]["type"] == "rate_limit_error"
    assert gateway.backend.calls == 10
    assert len(gateway.rows()) == 40


def test_bad_requests_get_openai_errors_not_500s(gateway: Gateway) -> None:
    key = new_key(gateway)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = f"{gateway.url}/chat/completions"
    model = gateway.backend.model_id
    cases: list[tuple[Any, str | None]] = [
        (b"{not json", None),
        ({"model": model}, "messages"),
        ({"model": model, "messages": []}, "messages"),
        ({"model": model, "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        (
            {"model": model, "messages": [{"role": "user", "content": "x"}], "temperature": 7},
            "temperature",
        ),
        ({"model": model, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": model, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, None),
    ]
    for body, param in cases:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        reply = httpx.post(url, content=data, headers=headers)
        assert reply.status_code == 400, (body, reply.text)
        err = reply.json()["error"]
        assert err["type"] == "invalid_request_error" and err["message"]
        if param:
            assert err["param"] == param
    unknown = httpx.post(
        url,
        headers=headers,
        json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]},
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert gateway.backend.calls == 0


def test_a_failed_log_write_fails_the_request(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = gateway.client(new_key(gateway))

    def broken(self: Any, rows: Any) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr("stillroom.serve.log.RequestLog._insert", broken)
    with pytest.raises(openai.InternalServerError, match="request log could not be written"):
        client.chat.completions.create(
            model=gateway.backend.model_id, messages=[{"role": "user", "content": "hi"}]
        )
    monkeypatch.undo()
    assert gateway.rows() == []


def test_admin_api_needs_its_token_and_manages_accounts(gateway: Gateway) -> None:
    base = gateway.url.removesuffix("/v1")
    assert httpx.get(f"{base}/admin/accounts").status_code == 401
    wrong = httpx.get(f"{base}/admin/accounts", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    auth = {"Authorization": f"Bearer {ADMIN}"}
    made = httpx.post(
        f"{base}/admin/accounts", headers=auth, json={"name": "gamma", "rpm_limit": 5}
    )
    assert made.status_code == 201
    key = made.json()["key"]
    listed = httpx.get(f"{base}/admin/accounts", headers=auth).json()["data"]
    assert [a["name"] for a in listed] == ["gamma"] and "key" not in json.dumps(listed)
    reply = gateway.client(key).completions.create(
        model=gateway.backend.model_id, prompt="a", max_tokens=2
    )
    assert reply.choices
    dup = httpx.post(f"{base}/admin/accounts", headers=auth, json={"name": "gamma"})
    assert dup.status_code == 400
    missing = httpx.post(f"{base}/admin/accounts/nobody/block", headers=auth)
    assert missing.status_code == 404


def test_watermarked_serving_is_logged_and_detectable(tmp_path: Path) -> None:
    from stillroom.watermark.detect import detect_text
    from stillroom.watermark.key import generate_key

    key = generate_key(gamma=0.25, delta=8.0)
    lm = make_tiny_lm(tmp_path / "lm")
    teacher = LocalTeacher.load(str(lm), batch_size=8, watermark=key)
    engine = open_db(str(tmp_path / "g.sqlite"))
    backend = LocalBackend(teacher, default_max_tokens=48, max_tokens_limit=64)
    with running(create_app(engine, backend)) as url:
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
        assert health["watermark_key_id"] == key.key_id
        client = openai.OpenAI(base_url=url, api_key=acc.create_account(engine, "a")[1].key)
        reply = client.completions.create(
            model=backend.model_id, prompt="The", max_tokens=48, n=4, seed=5
        )
    text = "".join(c.text for c in reply.choices)
    found = detect_text(text, key, teacher.tokenizer)
    assert found.tokens_scored >= 40 and found.z > 4 and found.p_value < 1e-4
    other = detect_text(text, generate_key(), teacher.tokenizer)
    assert other.z < 4
    with engine.connect() as conn:
        logged = conn.execute(sa.select(requests.c.watermark_key_id)).scalar_one()
    assert logged == key.key_id
