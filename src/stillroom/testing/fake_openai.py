"""A fake OpenAI-compatible teacher: a tiny random bigram model behind real HTTP, with faults.

Harvest tests (retries, Retry-After, crash-resume counting) and the throughput benchmark run
against it. It is a raw ASGI app under uvicorn on 127.0.0.1 only, answering

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models
    GET /_stats                 POST /_stats/reset

in the shapes the official `openai` client parses (a `stream` request as server-sent
events, a word at a time: fake_stream.py). Every generation request is counted by
the hash of its canonical JSON body, so a test can assert that nothing was asked twice:

    rules = [FaultRule("429", first=2, retry_after=0.1), FaultRule("drop", every=7)]
    with start_fake_server(FakeServerConfig(latency=0.01, faults=rules)) as srv:
        OpenAI(base_url=srv.base_url, api_key="x").chat.completions.create(...)
        assert not srv.stats().duplicates()

From a shell (the benchmark runs it in its own process; the URL is printed once listening):

    python -m stillroom.testing.fake_openai --port 0 --latency 0.05 --fault 429:every=5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import importlib.util
import json
import logging
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import uvicorn

from stillroom.testing.fake_config import FakeServerConfig, FaultRule
from stillroom.testing.fake_stream import stream_events
from stillroom.testing.tiny_lm import MAX_TOP_LOGPROBS, TinyLM

HOST = "127.0.0.1"  # never another address: this server has no auth and exists for tests

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# --- requests and replies ------------------------------------------------------------------------


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
}


def _error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    err_type, code = _ERROR_TYPES.get(status, ("invalid_request_error", None))
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


@dataclass
class _Params:
    n: int
    max_tokens: int
    temperature: float
    seed: int | None
    stop: list[str]
    logprobs: bool
    top_k: int


def _int_param(body: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _HTTPError(400, f"'{name}' must be an integer in [{lo}, {hi}]", name)
    return value


def _parse_params(body: Mapping[str, Any], chat: bool, default_max: int) -> _Params:
    max_key = (
        "max_completion_tokens" if chat and body.get("max_completion_tokens") else "max_tokens"
    )
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else temperature
    if not isinstance(temperature, int | float) or not 0.0 <= temperature <= 2.0:
        raise _HTTPError(400, "'temperature' must be a number in [0, 2]", "temperature")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _HTTPError(400, "'seed' must be an integer", "seed")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stop, list)
        or len(stop) > 4
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise _HTTPError(400, "'stop' must be a string or up to 4 non-empty strings", "stop")
    if chat:
        logprobs = bool(body.get("logprobs"))
        top_k = _int_param(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
        if top_k and not logprobs:
            raise _HTTPError(400, "'top_logprobs' requires 'logprobs': true", "top_logprobs")
    else:
        raw = body.get("logprobs")
        logprobs = raw is not None
        top_k = _int_param(body, "logprobs", 0, 0, MAX_TOP_LOGPROBS)
    return _Params(
        n=_int_param(body, "n", 1, 1, 128),
        max_tokens=_int_param(body, max_key, default_max, 1, 1_000_000),
        temperature=float(temperature),
        seed=seed,
        stop=stop,
        logprobs=logprobs,
        top_k=top_k,
    )


def _chat_prompt(body: Mapping[str, Any]) -> tuple[str, int]:
    """The conversation as one string (seeds sampling), and its prompt token count."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _HTTPError(400, "'messages' must be a non-empty list", "messages")
    lines, n_tokens = [], 3  # OpenAI-style accounting: 3 to prime the reply, 3 per message
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise _HTTPError(400, "each message needs a 'role' and 'content'", "messages")
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts: keep the text ones
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        lines.append(f"{m['role']}: {content}")
        n_tokens += 3 + len(str(content).split())
    return "\n".join(lines), n_tokens


def _completion_prompts(body: Mapping[str, Any]) -> list[str]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):  # one prompt as token ids
            return [" ".join(map(str, prompt))]
        if all(isinstance(p, str | list) for p in prompt):
            return [p if isinstance(p, str) else " ".join(map(str, p)) for p in prompt]
    raise _HTTPError(400, "'prompt' must be a string or a list of strings", "prompt")


@dataclass
class _Sample:
    ids: list[int]
    text: str
    finish_reason: str


def _generate(lm: TinyLM, prompt: str, p: _Params, index: int, random_lengths: bool) -> _Sample:
    base = p.seed if p.seed is not None else prompt
    rng = random.Random(f"{base}:{index}")  # str seeds hash deterministically across runs
    length = rng.randint(1, p.max_tokens) if random_lengths else p.max_tokens
    ids = lm.sample(lm.start_token(prompt), length, p.temperature, rng)
    text = "".join(lm.tokens[i] for i in ids)
    finish = "length" if length == p.max_tokens else "stop"
    cuts = [pos for pos in (text.find(s) for s in p.stop) if pos >= 0]
    if cuts:
        # Stop sequences are cut from the text, as OpenAI does; keep the whole tokens before it.
        text, finish, end = text[: min(cuts)], "stop", 0
        kept = 0
        while kept < len(ids) and end + len(lm.tokens[ids[kept]]) <= len(text):
            end += len(lm.tokens[ids[kept]])
            kept += 1
        ids = ids[:kept]
    return _Sample(ids, text, finish)


def body_hash(body: Any) -> str:
    """The key requests are counted under: sha256 of the JSON body with sorted keys."""
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- counting ----------------------------------------------------------------------------------


@dataclass
class FakeStats:
    """What the server received: generation requests only (not /v1/models or /_stats)."""

    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # body hash -> times received
    order: list[str] = field(default_factory=list)  # body hashes in arrival order
    by_path: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)  # fault kind -> times injected
    bodies: dict[str, Any] = field(default_factory=dict)  # first body per hash (not in /_stats)

    def duplicates(self) -> dict[str, int]:
        """Bodies received more than once, with their counts."""
        return {h: c for h, c in self.counts.items() if c > 1}

    def count(self, body: Any) -> int:
        """How many times this exact request body was received."""
        return self.counts.get(body_hash(body), 0)

    def to_json(self) -> dict[str, Any]:
        keys = ("total", "counts", "order", "by_path", "faults")
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FakeStats:
        keys = ("total", "counts", "order", "by_path", "faults")
        return cls(**{k: data[k] for k in keys})


def fetch_stats(base_url: str) -> FakeStats:
    """GET /_stats from a server running in another process (base_url ends in /v1)."""
    import httpx

    root = base_url.removesuffix("/").removesuffix("/v1")
    return FakeStats.from_json(httpx.get(f"{root}/_stats", timeout=10).json())


# --- the ASGI app -------------------------------------------------------------------------------


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send_json(
    send: Send, status: int, obj: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


async def _drop_connection(receive: Receive, send: Send) -> None:
    # ASGI has no "abort". uvicorn hands the app its cycle's bound `send`, whose transport we
    # close: the client sees EOF and no status line, as from a crashed upstream.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        transport.close()
        # Returns http.disconnect once uvicorn has seen the close, so it writes no 500.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receive(), timeout=1.0)
        return
    # Other servers: abandon a started response; the client sees a truncated body.
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]}
    )


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_GENERATE_PATHS = ("/v1/chat/completions", "/v1/completions")


class FakeOpenAIApp:
    """The raw ASGI app (no framework: the benchmark needs the server far from saturated)."""

    def __init__(self, config: FakeServerConfig) -> None:
        self.config = config
        self.faults: tuple[FaultRule, ...] = tuple(config.faults)
        self.lm = TinyLM(config.vocab_size, config.model_seed)
        self._lock = threading.Lock()  # the test thread reads stats while the server writes
        self._stats = FakeStats()
        self._ids = 0

    def stats(self) -> FakeStats:
        with self._lock:
            return FakeStats(
                **{f.name: copy.copy(getattr(self._stats, f.name)) for f in fields(FakeStats)}
            )

    def reset_stats(self) -> None:
        """Forget all requests; fault schedules count from request 1 again."""
        with self._lock:
            self._stats = FakeStats()

    def _record(self, path: str, key: str, body: Any) -> tuple[int, FaultRule | None]:
        """Count one generation request; pick its fault under the same lock, so concurrent
        requests each see a distinct number."""
        with self._lock:
            s = self._stats
            s.total += 1
            s.counts[key] = attempt = s.counts.get(key, 0) + 1
            s.order.append(key)
            s.by_path[path] = s.by_path.get(path, 0) + 1
            s.bodies.setdefault(key, body)
            number = s.total
            rule = next((r for r in self.faults if r.applies(number, attempt)), None)
            if rule is not None:
                s.faults[rule.kind] = s.faults.get(rule.kind, 0) + 1
            return number, rule

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # uvicorn runs with lifespan="off"
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        body = await _read_body(receive)
        if method == "POST" and path in _GENERATE_PATHS:
            await self._generation(path, body, receive, send)
        elif method == "GET" and path == "/v1/models":
            await _send_json(send, 200, {"object": "list", "data": [self._model_card()]})
        elif method == "GET" and path == f"/v1/models/{self.config.model}":
            await _send_json(send, 200, self._model_card())
        elif method == "GET" and path == "/_stats":
            await _send_json(send, 200, self.stats().to_json())
        elif method == "POST" and path == "/_stats/reset":
            self.reset_stats()
            await _send_json(send, 200, {"ok": True})
        else:
            await _send_json(send, 404, _error_body(404, f"no route {method} {path}"))

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.config.model, "object": "model", "created": 0, "owned_by": "stillroom"}

    async def _generation(self, path: str, raw: bytes, receive: Receive, send: Send) -> None:
        arrived = time.perf_counter()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        key = body_hash(body) if body is not None else hashlib.sha256(raw).hexdigest()
        number, rule = self._record(path, key, body)
        kind = rule.kind if rule is not None else None
        if rule is not None and kind in ("429", "500", "400", "401", "404"):
            status = int(rule.kind)
            headers = (
                [(b"retry-after", _seconds(rule.retry_after).encode())] if status == 429 else []
            )
            msg = f"injected fault {kind} on request {number}"
            await _send_json(send, status, _error_body(status, msg), headers)
            return
        if kind == "drop":
            await _drop_connection(receive, send)
            return
        try:
            if not isinstance(body, dict):
                raise _HTTPError(400, "the request body must be a JSON object")
            reply = self._reply(path, body, missing_fields=kind == "missing_fields")
        except _HTTPError as e:
            await _send_json(send, e.status, _error_body(e.status, e.message, e.param))
            return
        delay = self.config.latency + (rule.delay if rule is not None and kind == "slow" else 0.0)
        # Latency is time-to-reply, not extra sleep: our own work counts towards it, so a
        # benchmark's ceiling stays clients / latency.
        delay -= time.perf_counter() - arrived
        if delay > 0:
            await asyncio.sleep(delay)
        if body.get("stream"):
            chat = path == "/v1/chat/completions"
            await self._stream(receive, send, json.loads(reply), body, chat)
            return
        await _send_json(send, 200, reply)

    async def _stream(
        self, receive: Receive, send: Send, reply: dict[str, Any], body: Any, chat: bool
    ) -> None:
        """The reply as server-sent events, a word at a time, `stream_interval` s apart;
        stopped when the client leaves."""
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        headers = [(b"content-type", b"text/event-stream")]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for event in stream_events(reply, body, chat):
                if gone.is_set():
                    return
                data = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
                await send({"type": "http.response.body", "body": data, "more_body": True})
                if self.config.stream_interval > 0:
                    await asyncio.sleep(self.config.stream_interval)
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        finally:
            watcher.cancel()

    def _reply(self, path: str, body: dict[str, Any], missing_fields: bool) -> bytes:
        chat = path == "/v1/chat/completions"
        p = _parse_params(body, chat, self.config.default_max_tokens)
        if chat:
            prompt, prompt_tokens = _chat_prompt(body)
            prompts = [prompt]
        else:
            prompts = _completion_prompts(body)
            prompt_tokens = sum(len(q.split()) for q in prompts)
        lm, choices, completion_tokens = self.lm, [], 0
        for pi, prompt in enumerate(prompts):
            for j in range(p.n):
                index = pi * p.n + j
                s = _generate(lm, prompt, p, index, self.config.random_lengths)
                completion_tokens += len(s.ids)
                choice: dict[str, Any] = {"index": index, "finish_reason": s.finish_reason}
                if missing_fields:  # the fault: a 200 whose choices lack message/text
                    pass
                elif chat:
                    choice["message"] = {"role": "assistant", "content": s.text, "refusal": None}
                else:
                    choice["text"] = s.text
                logprobs = "null"
                if p.logprobs:
                    to_json = lm.chat_logprobs_json if chat else lm.completion_logprobs_json
                    logprobs = to_json(lm.start_token(prompt), s.ids, p.top_k)
                choices.append(_splice(choice, "logprobs", logprobs))
        self._ids += 1
        head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-fake{self._ids:010d}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or self.config.model,
            "system_fingerprint": "fp_stillroom_fake",
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return _splice(head, "choices", "[" + ",".join(choices) + "]").encode()


def _splice(obj: dict[str, Any], key: str, raw_json: str) -> str:
    """json.dumps(obj | {key: value}) where value is already JSON text."""
    return json.dumps(obj, separators=(",", ":"))[:-1] + f',"{key}":{raw_json}}}'


# --- running it ---------------------------------------------------------------------------------


class FakeServer:
    """A running fake server: `base_url` for the client, `stats()` for the test."""

    def __init__(
        self, app: FakeOpenAIApp, server: uvicorn.Server, thread: threading.Thread, port: int
    ):
        self.app, self._server, self._thread, self.port = app, server, thread, port
        self.url = f"http://{HOST}:{port}"
        self.base_url = f"{self.url}/v1"

    def stats(self) -> FakeStats:
        return self.app.stats()

    def reset_stats(self) -> None:
        self.app.reset_stats()

    def set_faults(self, faults: Iterable[FaultRule]) -> None:
        """Replace the fault schedule (request numbering continues until `reset_stats`)."""
        self.app.faults = tuple(faults)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():  # a "slow" request still sleeping: do not wait for it
            self._server.force_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _http_impl() -> Literal["httptools", "h11"]:
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def start_fake_server(config: FakeServerConfig | None = None, timeout: float = 10.0) -> FakeServer:
    """Serve on 127.0.0.1 from a background thread; return once it accepts connections."""
    config = config or FakeServerConfig()
    app = FakeOpenAIApp(config)
    # Binding the socket here (port 0 = any free one) tells us the port before uvicorn starts.
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # proto says TCP, and with Nagle on, the header and body writes meet the client's delayed
    # ACK: +40 ms per reply.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, config.port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop="asyncio",
            http=_http_impl(),
            lifespan="off",
            access_log=False,
            log_level="warning",
            log_config=None,  # leave the host process's logging setup alone
            backlog=2048,
            limit_concurrency=config.max_concurrency,
            timeout_keep_alive=30,  # benchmark clients hold pooled connections between bursts
            timeout_graceful_shutdown=1,
            server_header=False,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fake-openai-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the fake OpenAI server did not start on {HOST}:{port}")
        time.sleep(0.002)
    return FakeServer(app, server, thread, port)


def main(argv: Sequence[str] | None = None) -> None:
    """Run in the foreground; print the base URL on stdout once listening; stop on SIGTERM/^C."""
    parser = argparse.ArgumentParser(
        prog="python -m stillroom.testing.fake_openai", description=main.__doc__
    )
    add = parser.add_argument
    add("--port", type=int, default=0, help="0 picks a free port (default)")
    add("--latency", type=float, default=0.0, help="seconds added to each reply")
    add("--stream-interval", type=float, default=0.0, help="seconds between stream events")
    add("--random-lengths", action="store_true", help="lengths in [1, max_tokens]")
    fault_help = "e.g. 429:every=5,retry_after=0.5 or drop:requests=3+9 (repeatable)"
    add("--fault", action="append", default=[], metavar="KIND[:k=v,...]", help=fault_help)
    add("--model", default="fake-tiny")
    add("--model-seed", type=int, default=0)
    add("--max-concurrency", type=int, default=1024)
    args = vars(parser.parse_args(argv))
    try:
        args["faults"] = [FaultRule.parse(spec) for spec in args.pop("fault")]
    except ValueError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = FakeServerConfig(**args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with start_fake_server(config) as server:
        print(server.base_url, flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
