"""A teacher behind any OpenAI-compatible API (OpenAI, vLLM, llama.cpp, Ollama, `serve`).

The official `openai` async client makes the calls; retries are ours (the client's own are
off) so that 429s honour Retry-After, transient failures back off with jitter, and statuses
that retrying cannot fix stop the run at once instead of starting a retry storm.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from typing import Any

import numpy as np
import openai

from stillroom.errors import (
    TeacherFatalError,
    TeacherReplyError,
    TeacherUnavailable,
)
from stillroom.teacher_config import ApiTeacherConfig
from stillroom.teachers.base import Choice, Completion, TeacherKind, TeacherRequest, Usage
from stillroom.teachers.estimates import input_tokens_upper_bound
from stillroom.teachers.ratelimit import TokenBucket

_RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APIConnectionError,  # includes timeouts and dropped connections
    openai.ConflictError,
)
_FATAL_HINTS = {
    400: "the API rejected the request; check the generation parameters in the config",
    401: "the API rejected the key; set teacher.api_key_env to a variable holding a valid key",
    403: "the key may not use this model or endpoint; check the account's access",
    404: "model or endpoint not found; check teacher.model and teacher.base_url",
    422: "the API could not process the request; check the generation parameters",
}
_MAX_BACKOFF_S = 60.0


class OpenAITeacher:
    kind: TeacherKind = "api"

    def __init__(self, cfg: ApiTeacherConfig, *, client: openai.AsyncOpenAI | None = None) -> None:
        self.cfg = cfg
        self.model = cfg.model
        self.concurrency = cfg.concurrency
        self.client = client or openai.AsyncOpenAI(
            base_url=cfg.base_url,
            api_key=os.environ.get(cfg.api_key_env) or "none",
            timeout=cfg.timeout_s,
            # Retries are ours (`_call_with_retries`). The client (openai 3.63) already honours
            # retry-after-ms / Retry-After and retries 408/409/429/5xx with 0-25% jitter, but
            # its retries happen inside one `post`, so they would skip the requests-per-minute
            # bucket, go uncounted in `self.retries` (the run summary), ignore
            # teacher.retry_backoff_s (it backs off from a fixed 0.5 s to at most 8 s) and
            # end in an openai error rather than TeacherUnavailable naming the fix.
            max_retries=0,
        )
        self._rpm = TokenBucket(cfg.requests_per_minute) if cfg.requests_per_minute else None
        self._tpm = TokenBucket(cfg.tokens_per_minute) if cfg.tokens_per_minute else None
        self.retries = 0  # total retried attempts, for the run summary

    async def aclose(self) -> None:
        await self.client.close()

    async def complete(self, request: TeacherRequest) -> Completion:
        kwargs = self._kwargs(request)
        tokens_est = input_tokens_upper_bound(request) + (request.params.max_tokens or 0)
        if self._tpm:
            await self._tpm.acquire(tokens_est)
        start = time.perf_counter()
        reply = await self._call_with_retries(kwargs)
        latency = time.perf_counter() - start
        comp = self._parse(reply, latency)
        if self._tpm:
            used = comp.usage.prompt_tokens + comp.usage.completion_tokens
            self._tpm.refund(max(0, tokens_est - used))
        return comp

    async def echo_ids(self, ids: list[int], k: int) -> dict[str, Any]:
        """The server's log-probs of a token-id sequence, with the top k at every token:
        `completions` with echo, max_tokens 0 and ids named as ids (vLLM, `serve`)."""
        body = {
            "model": self.model,
            "prompt": list(ids),
            "echo": True,
            "max_tokens": 0,
            "logprobs": k,
            "return_tokens_as_token_ids": True,
        }
        return await self._call_with_retries(body, path="/completions")

    def _kwargs(self, request: TeacherRequest) -> dict[str, Any]:
        p = request.params
        kw: dict[str, Any] = {"model": self.model, "n": p.n}
        optional = {
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "seed": p.seed,
            "stop": list(p.stop) or None,
        }
        kw.update({k: v for k, v in optional.items() if v is not None})
        if self.cfg.endpoint == "chat":
            if request.messages is not None:
                kw["messages"] = [{"role": r, "content": c} for r, c in request.messages]
            else:
                kw["messages"] = [{"role": "user", "content": request.prompt or ""}]
            if p.top_logprobs:
                kw["logprobs"] = True
                kw["top_logprobs"] = p.top_logprobs
        else:
            if request.messages is not None:
                raise TeacherFatalError(
                    "chat messages cannot go to the completions endpoint; set "
                    "teacher.endpoint: chat, or give prompts.field / prompts.template without "
                    "prompts.system"
                )
            kw["prompt"] = request.prompt or ""
            if p.top_logprobs:
                kw["logprobs"] = p.top_logprobs
        if self.cfg.token_ids:
            kw["return_token_ids"] = kw["return_tokens_as_token_ids"] = True
        return kw

    async def _call_with_retries(self, kwargs: dict[str, Any], path: str | None = None) -> Any:
        attempt = 0
        while True:
            if self._rpm:
                await self._rpm.acquire()
            try:
                # The client's generic POST: its HTTP stack, headers and error statuses, but
                # neither the per-call transform of the parameters (they are plain JSON
                # already) nor pydantic reply objects; together those cost more CPU than the
                # rest of a harvest call (~1 ms per request, profiled).
                if path is None:
                    path = "/chat/completions" if self.cfg.endpoint == "chat" else "/completions"
                raw = await self.client.post(path, body=kwargs, cast_to=bytes)
                return _json_body(raw)
            except _RETRYABLE as e:
                if attempt >= self.cfg.max_retries:
                    raise TeacherUnavailable(
                        f"teacher at {self.client.base_url} still failing after "
                        f"{attempt} retries ({_describe(e)}); check that the endpoint is up, "
                        "or raise teacher.max_retries"
                    ) from None
                await asyncio.sleep(self._delay(e, attempt))
                attempt += 1
                self.retries += 1
            except openai.APIStatusError as e:
                hint = _FATAL_HINTS.get(e.status_code, "retrying cannot fix this status")
                raise TeacherFatalError(
                    f"teacher at {self.client.base_url} answered {e.status_code}: "
                    f"{_describe(e)}; {hint}",
                    status=e.status_code,
                ) from None

    def _delay(self, err: Exception, attempt: int) -> float:
        """Retry-After when the server gives one, else exponential backoff with full jitter."""
        response = getattr(err, "response", None)
        if response is not None:
            after = _retry_after_seconds(response.headers)
            if after is not None:
                return min(after, _MAX_BACKOFF_S)
        ceiling = min(_MAX_BACKOFF_S, self.cfg.retry_backoff_s * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)

    def _parse(self, reply: dict[str, Any], latency: float) -> Completion:
        choices_raw = reply.get("choices")
        if not isinstance(choices_raw, list) or not choices_raw:
            raise TeacherReplyError("reply has no choices")
        chat = self.cfg.endpoint == "chat"
        choices = [_parse_chat_choice(c) if chat else _parse_text_choice(c) for c in choices_raw]
        prompt_ids = None
        if self.cfg.token_ids:
            given = reply.get("prompt_token_ids") or choices_raw[0].get("prompt_token_ids")
            prompt_ids = _as_ids(given, "prompt_token_ids")
            for choice, raw in zip(choices, choices_raw, strict=True):
                with_ids(choice, _as_ids(raw.get("token_ids"), "token_ids"))
        usage = reply.get("usage") or {}
        prompt_tokens, completion_tokens = (
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
        )
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
            raise TeacherReplyError("reply has no usage (prompt_tokens, completion_tokens)")
        return Completion(
            choices=choices,
            usage=Usage(prompt_tokens, completion_tokens),
            model=reply.get("model") or self.model,
            latency_s=latency,
            prompt_token_ids=prompt_ids,
        )


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise TeacherReplyError("reply is not valid JSON") from None
    if not isinstance(body, dict):
        raise TeacherReplyError("reply is not a JSON object")
    return body


def _describe(e: Exception) -> str:
    if isinstance(e, openai.APIStatusError):
        body = e.body
        if isinstance(body, dict):
            msg = body.get("message") or (body.get("error") or {}).get("message")
            if msg:
                return str(msg)
        return e.message
    return type(e).__name__ + (f": {e}" if str(e) else "")


def _retry_after_seconds(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP date: rare from APIs; fall back to backoff
    return None


def _as_ids(value: Any, field: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(i, int) for i in value):
        raise TeacherReplyError(
            f"reply has no {field}; teacher.token_ids needs a server that returns token ids "
            "(vLLM, stillroom serve); set teacher.token_ids: false for others"
        )
    return value


def with_ids(choice: Choice, ids: list[int]) -> None:
    """Turn a choice read with token strings into one in vocabulary ids, as a local teacher
    gives it, when every token string names its id ("token_id:N")."""
    named = [_named_id(t) for t in (choice.tokens or [])]
    table = [_named_id(t) for t in (choice.token_table or [])]
    if choice.tokens is not None and (named != ids[: len(named)] or None in table):
        raise TeacherReplyError(
            "logprobs: tokens are not named by id ('token_id:N') although teacher.token_ids "
            "asked for them"
        )
    choice.token_ids = list(ids)
    if choice.top_ids is not None:
        lookup = np.asarray([-1 if t is None else t for t in table], dtype=np.int64)
        choice.top_ids = np.where(choice.top_ids >= 0, lookup[np.maximum(choice.top_ids, 0)], -1)
    choice.tokens, choice.token_table = None, None


def _named_id(token: str) -> int | None:
    return int(token[9:]) if token.startswith("token_id:") else None


def _parse_chat_choice(c: dict[str, Any]) -> Choice:
    text = (c.get("message") or {}).get("content")
    if not isinstance(text, str):
        raise TeacherReplyError(f"choice {c.get('index', '?')} has no message content")
    choice = Choice(index=c.get("index", 0), text=text, finish_reason=c.get("finish_reason"))
    content = (c.get("logprobs") or {}).get("content")
    if content:
        tokens = [t["token"] for t in content]
        tops = [[(a["token"], a["logprob"]) for a in t.get("top_logprobs") or []] for t in content]
        _attach_signals(choice, tokens, [t.get("logprob") for t in content], tops)
    return choice


def _parse_text_choice(c: dict[str, Any]) -> Choice:
    text = c.get("text")
    if not isinstance(text, str):
        raise TeacherReplyError(f"choice {c.get('index', '?')} has no text")
    choice = Choice(index=c.get("index", 0), text=text, finish_reason=c.get("finish_reason"))
    lp = c.get("logprobs") or {}
    tokens = lp.get("tokens")
    if tokens:
        tops = [list((d or {}).items()) for d in (lp.get("top_logprobs") or [None] * len(tokens))]
        _attach_signals(choice, list(tokens), list(lp.get("token_logprobs") or []), tops)
    return choice


def _attach_signals(
    choice: Choice,
    tokens: list[str],
    token_logprobs: list[float | None],
    tops: list[list[tuple[str, float]]],
) -> None:
    """API tokens are strings: keep a per-choice table of the distinct strings, and store
    top-k ids as indices into it (ids stay small, so the codec packs them in few bits)."""
    if len(token_logprobs) != len(tokens) or len(tops) != len(tokens):
        raise TeacherReplyError(
            "logprobs: tokens, token_logprobs and top_logprobs differ in length"
        )
    table: dict[str, int] = {}
    for tok in tokens:
        table.setdefault(tok, len(table))
    k = max((len(t) for t in tops), default=0)
    ids = np.full((len(tokens), k), -1, dtype=np.int64)
    lps = np.full((len(tokens), k), -np.inf, dtype=np.float32)
    for i, row in enumerate(tops):
        for j, (tok, lp) in enumerate(sorted(row, key=lambda t: -t[1])):
            ids[i, j] = table.setdefault(tok, len(table))
            lps[i, j] = lp
    choice.tokens = tokens
    choice.token_logprobs = [float(x) if x is not None else float("nan") for x in token_logprobs]
    choice.token_table = list(table)
    if k:
        choice.top_ids, choice.top_logprobs = ids, lps
