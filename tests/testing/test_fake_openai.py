"""The fake OpenAI server: every reply shape parses in the official client; faults fire as
scheduled; requests are counted by body."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from stillroom.testing.fake_openai import (
    FakeServer,
    FakeServerConfig,
    FaultRule,
    body_hash,
    fetch_stats,
    start_fake_server,
)
from stillroom.testing.tiny_lm import TinyLM

pytestmark = pytest.mark.integration

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "name a word"},
]


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeServer]:
    with start_fake_server(FakeServerConfig()) as srv:
        yield srv


@pytest.fixture
def server(shared: FakeServer) -> FakeServer:
    shared.set_faults([])
    shared.reset_stats()
    return shared


@pytest.fixture
def client(server: FakeServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="test", max_retries=0)


def chat(client: OpenAI, **kwargs: object) -> ChatCompletion:
    args: dict = {"model": "fake-tiny", "messages": MESSAGES, "max_tokens": 8, **kwargs}
    return client.chat.completions.create(**args)


# --- reply shapes ----------------------------------------------------------------------------


def test_chat_reply_parses(client: OpenAI) -> None:
    r = chat(client, seed=1)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"
    assert r.model == "fake-tiny" and isinstance(r.created, int)
    (choice,) = r.choices
    assert choice.index == 0 and choice.finish_reason == "length" and choice.logprobs is None
    assert choice.message.role == "assistant" and choice.message.content
    assert len(choice.message.content.split()) <= 8
    assert r.usage is not None
    # 3 priming + (3 + words) per message: "be brief" (2) and "name a word" (3)
    assert r.usage.prompt_tokens == 3 + (3 + 2) + (3 + 3)
    assert r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8


async def test_async_completions_reply_parses(server: FakeServer) -> None:
    async with AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0) as client:
        r = await client.completions.create(model="m", prompt="one two three", max_tokens=5)
    assert r.object == "text_completion" and r.model == "m"
    (choice,) = r.choices
    assert choice.text and choice.finish_reason == "length" and choice.logprobs is None
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 5, 8)


def test_n_choices_and_batched_prompts(client: OpenAI) -> None:
    r = chat(client, n=3, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3
    assert r.usage is not None and r.usage.completion_tokens == 24
    c = client.completions.create(model="m", prompt=["a b", "c"], n=2, max_tokens=3)
    assert [ch.index for ch in c.choices] == [0, 1, 2, 3]
    assert c.usage is not None and (c.usage.prompt_tokens, c.usage.completion_tokens) == (3, 12)


def test_chat_logprobs(client: OpenAI) -> None:
    r = chat(client, logprobs=True, top_logprobs=5, max_tokens=12, seed=3)
    choice = r.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    content = choice.logprobs.content
    assert len(content) == 12
    assert "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert t.bytes == list(t.token.encode())
        assert t.logprob < 0
        tops = [a.logprob for a in t.top_logprobs]
        assert len(tops) == 5 and tops == sorted(tops, reverse=True)
        assert t.logprob <= tops[0]
        assert all(a.bytes == list(a.token.encode()) for a in t.top_logprobs)
        # the sampled token, when among the top 5, carries the same log-prob there
        same = [a.logprob for a in t.top_logprobs if a.token == t.token]
        assert not same or same[0] == t.logprob
    # logprobs without top_logprobs: per-token entries with empty alternatives
    plain = chat(client, logprobs=True, seed=3, max_tokens=12).choices[0].logprobs
    assert plain is not None and plain.content is not None
    assert [t.token for t in plain.content] == [t.token for t in content]
    assert all(t.top_logprobs == [] for t in plain.content)


def test_completion_logprobs(client: OpenAI) -> None:
    r = client.completions.create(model="m", prompt="hello", max_tokens=10, logprobs=3, seed=4)
    choice = r.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert lp.text_offset is not None
    assert "".join(lp.tokens) == choice.text
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 10
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(10)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 3 and logprob <= max(top.values())
        assert token not in top or top[token] == logprob


def test_logprobs_are_the_models_own(client: OpenAI) -> None:
    """Top-20 alternatives are a true distribution's head; greedy takes the top one."""
    lm = TinyLM()
    r = chat(client, logprobs=True, top_logprobs=20, temperature=0, max_tokens=6)
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None
    for t in content:
        mass = sum(math.exp(a.logprob) for a in t.top_logprobs)
        assert 0.5 < mass <= 1.0 + 1e-9  # peaked rows: the top 20 hold most of the mass
        assert t.token == t.top_logprobs[0].token  # greedy at temperature 0
    ids = [lm.tokens.index(t.token) for t in content]
    pairs = zip(ids, ids[1:], content[1:], strict=False)
    assert all(lm.logprob(a, b) == t.logprob for a, b, t in pairs)


def test_models_endpoint(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["fake-tiny"]


# --- sampling behaviour ------------------------------------------------------------------------


def text(client: OpenAI, **kwargs: object) -> str:
    return chat(client, **kwargs).choices[0].message.content or ""


def test_seeded_determinism(client: OpenAI) -> None:
    assert text(client, seed=11) == text(client, seed=11)
    assert text(client, seed=11) != text(client, seed=12)
    # no seed: seeded by the prompt, so a prompt repeats and a different one does not
    assert text(client) == text(client)
    other = [{"role": "user", "content": "something else"}]
    assert text(client, messages=other) != text(client)
    assert text(client, temperature=0, seed=1) == text(client, temperature=0, seed=2)


def test_stop_strings(client: OpenAI) -> None:
    full = chat(client, seed=5, max_tokens=10, logprobs=True)
    tokens = [t.token for t in full.choices[0].logprobs.content]  # type: ignore[union-attr]
    stop = tokens[4]
    cut = chat(client, seed=5, max_tokens=10, logprobs=True, stop=[stop, "never-there"])
    choice = cut.choices[0]
    expected = "".join(tokens)[: "".join(tokens).index(stop)]
    assert choice.message.content == expected and choice.finish_reason == "stop"
    assert "".join(t.token for t in choice.logprobs.content) == expected  # type: ignore[union-attr]
    assert cut.usage is not None and cut.usage.completion_tokens == tokens.index(stop)


def test_random_lengths() -> None:
    with start_fake_server(FakeServerConfig(random_lengths=True)) as srv:
        client = OpenAI(base_url=srv.base_url, api_key="t", max_retries=0)
        r = client.completions.create(model="m", prompt="p", n=40, max_tokens=6)
    assert r.usage is not None
    lengths = [len(c.text.split()) for c in r.choices]
    assert min(lengths) >= 1 and max(lengths) <= 6 and len(set(lengths)) > 2
    for c in r.choices:
        assert c.finish_reason == ("length" if len(c.text.split()) == 6 else "stop")
    assert r.usage.completion_tokens == sum(lengths)


def test_bad_requests_get_openai_errors(client: OpenAI, server: FakeServer) -> None:
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        chat(client, top_logprobs=3)
    with pytest.raises(openai.BadRequestError, match="messages"):
        chat(client, messages=[])
    r = httpx.post(f"{server.base_url}/chat/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{server.url}/nowhere").status_code == 404


# --- faults ---------------------------------------------------------------------------------------


def test_429_carries_retry_after(client: OpenAI, server: FakeServer) -> None:
    server.set_faults([FaultRule("429", first=1, retry_after=0.25)])
    with pytest.raises(openai.RateLimitError) as info:
        chat(client)
    assert info.value.response.headers["retry-after"] == "0.25"
    assert info.value.code == "rate_limit_exceeded"
    server.reset_stats()
    # the official client waits as told, then the retry succeeds
    started = time.monotonic()
    retrying = OpenAI(base_url=server.base_url, api_key="t", max_retries=2)
    assert retrying.chat.completions.create(model="m", messages=MESSAGES).choices[0].message
    assert time.monotonic() - started >= 0.25
    stats = server.stats()
    assert stats.total == 2 and list(stats.duplicates().values()) == [2]


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("500", openai.InternalServerError),
        ("400", openai.BadRequestError),
        ("401", openai.AuthenticationError),
        ("404", openai.NotFoundError),
    ],
)
def test_error_faults(client: OpenAI, server: FakeServer, kind: str, error: type) -> None:
    server.set_faults([FaultRule(kind, requests=(2,))])  # type: ignore[arg-type]
    chat(client)
    with pytest.raises(error):
        chat(client)
    chat(client)
    assert server.stats().faults == {kind: 1}


def test_drop_closes_without_a_response(client: OpenAI, server: FakeServer) -> None:
    server.set_faults([FaultRule("drop")])
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{server.base_url}/chat/completions", json={"messages": MESSAGES})
    with pytest.raises(openai.APIConnectionError):
        chat(client)
    assert server.stats().faults == {"drop": 2}


def test_slow(client: OpenAI, server: FakeServer) -> None:
    server.set_faults([FaultRule("slow", first=1, delay=0.3)])
    url = f"{server.base_url}/completions"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json={"prompt": "x"}, timeout=0.1)
    started = time.monotonic()
    chat(client)  # request 2: on time
    assert time.monotonic() - started < 0.25


def test_missing_fields(client: OpenAI, server: FakeServer) -> None:
    server.set_faults([FaultRule("missing_fields")])
    r = chat(client)
    assert r.choices[0].message is None and r.usage is not None
    c = client.completions.create(model="m", prompt="x", max_tokens=2)
    assert getattr(c.choices[0], "text", None) is None


def test_fault_selectors() -> None:
    def picked(rule: FaultRule, n: int = 30, attempts: dict[int, int] | None = None) -> list[int]:
        attempts = attempts or {}
        return [i for i in range(1, n + 1) if rule.applies(i, attempts.get(i, 1))]

    assert picked(FaultRule("500", every=4)) == [4, 8, 12, 16, 20, 24, 28]
    assert picked(FaultRule("500", first=3)) == [1, 2, 3]
    assert picked(FaultRule("500", every=2, first=7)) == [2, 4, 6]
    assert picked(FaultRule("500", requests=(5, 9))) == [5, 9]
    assert picked(FaultRule("500", attempts=1), 4, {2: 2, 4: 3}) == [1, 3]
    chance = FaultRule("500", probability=0.3, seed=1)
    hits = picked(chance, 2000)
    assert hits == picked(chance, 2000) and 500 < len(hits) < 700
    assert picked(FaultRule("500", probability=0.3, seed=2), 2000) != hits
    assert FaultRule.parse("429:every=5,retry_after=0.5") == FaultRule("429", 5, retry_after=0.5)
    assert FaultRule.parse("drop:requests=3+9").requests == (3, 9)
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultRule("503")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bad fault option"):
        FaultRule.parse("500:often=2")


def test_first_attempt_of_each_body_fails_then_retry_succeeds(server: FakeServer) -> None:
    server.set_faults([FaultRule("429", attempts=1, retry_after=0.01)])
    client = OpenAI(base_url=server.base_url, api_key="t", max_retries=1)
    for i in range(3):
        chat(client, seed=i)
    stats = server.stats()
    assert stats.total == 6 and stats.faults == {"429": 3}
    assert sorted(stats.duplicates().values()) == [2, 2, 2]


# --- counting ---------------------------------------------------------------------------------


def test_stats_count_bodies_in_order(client: OpenAI, server: FakeServer) -> None:
    chat(client, seed=1)
    chat(client, seed=2)
    chat(client, seed=1)
    client.models.list()  # not a generation request: not counted
    stats = server.stats()
    sent = {"model": "fake-tiny", "messages": MESSAGES, "max_tokens": 8, "seed": 1}
    key = body_hash(sent)
    assert stats.total == 3 and stats.count(sent) == 2 and stats.duplicates() == {key: 2}
    assert stats.order[0] == stats.order[2] == key != stats.order[1]
    assert stats.by_path == {"/v1/chat/completions": 3}
    assert stats.bodies[key] == sent
    # the same figures over HTTP, for a server in another process
    remote = fetch_stats(server.base_url)
    assert (remote.total, remote.counts, remote.order) == (3, stats.counts, stats.order)
    httpx.post(f"{server.url}/_stats/reset")
    assert server.stats().total == 0


async def test_concurrent_clients_are_all_counted() -> None:
    with start_fake_server(FakeServerConfig(latency=0.05)) as srv:
        async with AsyncOpenAI(base_url=srv.base_url, api_key="t", max_retries=0) as client:
            started = time.monotonic()
            replies = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=4
                    )
                    for i in range(64)
                )
            )
            elapsed = time.monotonic() - started
        stats = srv.stats()
    assert len(replies) == 64 and stats.total == 64 and not stats.duplicates()
    # Served one after another, 64 replies take at least 3.2 s; half of that leaves room for
    # the client's own work on a loaded 2-core machine (it once took 0.90 s).
    assert elapsed < 64 * 0.05 / 2  # served concurrently, not one after another


def test_cli_prints_url_and_serves() -> None:
    cmd = [sys.executable, "-m", "stillroom.testing.fake_openai", "--fault", "500:first=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        client = OpenAI(base_url=url, api_key="t", max_retries=1)
        assert chat(client).choices[0].message.content
        assert fetch_stats(url).faults == {"500": 1}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
