"""Hostile bodies against a real gateway: lone surrogates, huge and non-finite numbers, deep
nesting, wrong types and raw bytes, in every field of otherwise valid requests. Every answer
is a success or a refusal in OpenAI's error envelope, never a 5xx, and each is logged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stillroom.serve.accounts import create_account
from stillroom.serve.app import create_app
from stillroom.serve.backends import LocalBackend
from stillroom.serve.db import open_db, requests
from stillroom.serve.gateway import ServeSettings
from stillroom.teachers.local import LocalTeacher
from tests.helpers.serve import running
from tests.helpers.tiny_models import make_tiny_lm

pytestmark = pytest.mark.integration

ENVELOPE = {"message", "type", "param", "code"}


class Deep(int):
    """Arrays nested this deep, written into the body's JSON as raw text."""


hostile_text = st.one_of(
    st.sampled_from(["\ud800", "a\udfffb", "\udbff\udc00", "\x00", "\u202e", "x" * 5000]),
    st.text(alphabet=st.characters(min_codepoint=0xD700, max_codepoint=0xE000), max_size=4),
)
hostile_number = st.sampled_from(
    [10**9, 10**30, -(10**30), 2**63, -(2**63) - 1, 1e308, -1e-308, float("inf"), float("nan")]
)
leaf = st.one_of(hostile_text, hostile_number, st.booleans(), st.none(), st.text(max_size=8))
hostile = st.one_of(
    leaf,
    st.recursive(leaf, lambda inner: st.lists(inner, max_size=3), max_leaves=6),
    st.integers(200, 20_000).map(Deep),
)
FIELDS = ["model", "messages", "n", "temperature", "top_p", "max_tokens", "stop", "seed"]
FIELDS += ["stream", "stream_options", "user", "logprobs", "top_logprobs", "prompt"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, sa.Engine]]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    teacher = LocalTeacher.load(str(make_tiny_lm(tmp / "lm")), batch_size=8)
    engine = open_db(str(tmp / "gateway.sqlite"))
    key = create_account(engine, "fuzzer")[1].key
    backend = LocalBackend(teacher, default_max_tokens=2, max_tokens_limit=4)
    with running(create_app(engine, backend, ServeSettings(default_max_tokens=2))) as url:
        yield url, key, engine
    engine.dispose()


def _encode(body: dict[str, Any]) -> bytes:
    # json.dumps writes lone surrogates as \\u escapes and inf/nan as Infinity/NaN, which
    # Python's own parser accepts: both must be refused, not crash.
    deep = {k: v for k, v in body.items() if isinstance(v, Deep)}
    text = json.dumps({k: "@deep@" if k in deep else v for k, v in body.items()})
    for depth in deep.values():
        text = text.replace('"@deep@"', "[" * depth + "]" * depth, 1)
    return text.encode()


@given(
    endpoint=st.sampled_from(["/chat/completions", "/completions"]),
    field=st.sampled_from(FIELDS),
    value=hostile,
    raw=st.one_of(st.none(), st.binary(max_size=64)),
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_hostile_bodies_get_answers_or_enveloped_refusals(
    served: tuple[str, str, sa.Engine], endpoint: str, field: str, value: Any, raw: bytes | None
) -> None:
    url, key, engine = served
    with engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(requests)).scalar_one()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi"}
    body |= {"max_tokens": 2, field: value}
    data = raw if raw is not None else _encode(body)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    reply = httpx.post(url + endpoint, content=data, headers=headers, timeout=60)
    assert reply.status_code < 500, (field, data[:200], reply.text[:300])
    if reply.status_code >= 400:
        assert set(reply.json()["error"]) == ENVELOPE, reply.text[:300]
    with engine.connect() as conn:
        after = conn.execute(sa.select(sa.func.count()).select_from(requests)).scalar_one()
    assert after == before + 1  # every request, served or refused, is one log row
