"""The gateway in front of a real vLLM server (scripts/start-vllm, Gemma 3 270M): a stream is
passed through as vLLM generates it, and its log row holds what the client was sent and
vLLM's token counts; an unstreamed reply is vLLM's, logged the same way."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from stillroom.serve.accounts import create_account
from stillroom.serve.app import create_app
from stillroom.serve.backends import UpstreamBackend
from stillroom.serve.db import open_db, requests
from tests.helpers.serve import running

pytestmark = pytest.mark.integration

LONG = 96  # tokens: seconds of generation on this machine, so "as it comes" is measurable


def _ask(content: str, **extra: object) -> dict[str, object]:
    messages = [{"role": "user", "content": content}]
    return {"model": "gemma-3-270m", "messages": messages, "temperature": 0} | extra


def test_a_vllm_stream_passes_through_the_gateway_as_it_comes(
    vllm_url: str, tmp_path: Path
) -> None:
    engine = open_db(str(tmp_path / "gateway.sqlite"))
    key = create_account(engine, "acme")[1].key
    headers = {"Authorization": f"Bearer {key}"}
    backend = UpstreamBackend(vllm_url, api_key=None)
    try:
        with running(create_app(engine, backend)) as url:
            body = _ask("Tell me about the history of glass.", stream=True, max_tokens=LONG)
            started = time.perf_counter()
            first_s, lines = None, []
            with httpx.stream(
                "POST", f"{url}/chat/completions", json=body, headers=headers, timeout=300
            ) as reply:
                assert reply.status_code == 200
                for line in reply.iter_lines():
                    if line:
                        first_s = first_s or time.perf_counter() - started
                        lines.append(line)
            whole_s = time.perf_counter() - started
            whole = httpx.post(
                f"{url}/chat/completions",
                json=_ask("Tell me about the history of glass.", max_tokens=LONG),
                headers=headers,
                timeout=300,
            )
    finally:
        engine.dispose()
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(x[6:]) for x in lines[:-1]]
    said = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    # vLLM's greedy answer, the same streamed or not
    assert said and said == whole.json()["choices"][0]["message"]["content"]
    # the first event arrives while vLLM is still generating, not after it has finished
    assert first_s is not None and first_s < whole_s / 3, (first_s, whole_s)

    engine = open_db(str(tmp_path / "gateway.sqlite"), migrate=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(requests).order_by(requests.c.created_at)).all()
    finally:
        engine.dispose()
    streamed = rows[0]
    assert streamed.id == events[0]["id"]
    assert json.loads(streamed.response_text) == [said]
    assert streamed.completion_tokens == whole.json()["usage"]["completion_tokens"]
    assert streamed.delivery == "delivered" and streamed.error is None
