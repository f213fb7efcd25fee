"""OpenAI reply bodies and stream chunks from an `Answer`, in the shapes the official client
parses: chat.completion / chat.completion.chunk, text_completion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from stillroom.serve.backends import Answer, AnswerChoice, TokenLogprob


def _usage(a: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens + a.completion_tokens,
    }


def _chat_logprobs(lps: list[TokenLogprob]) -> dict[str, Any]:
    def entry(token: str, lp: float | None) -> dict[str, Any]:
        return {"token": token, "logprob": lp, "bytes": list(token.encode())}

    content = [
        entry(t.token, t.logprob) | {"top_logprobs": [entry(s, v) for s, v in t.top]} for t in lps
    ]
    return {"content": content, "refusal": None}


def _text_logprobs(lps: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    offsets, at = [], offset
    for t in lps:
        offsets.append(at)
        at += len(t.token)
    return {
        "tokens": [t.token for t in lps],
        "token_logprobs": [t.logprob for t in lps],
        # A token nothing predicts (an echoed prompt's first) has null, as OpenAI sends.
        "top_logprobs": [None if t.logprob is None else dict(t.top) for t in lps]
        if any(t.top for t in lps)
        else None,
        "text_offset": offsets,
    }


def _logprobs(c: AnswerChoice, chat: bool) -> Any:
    if c.logprobs is None:
        return c.raw_logprobs
    return _chat_logprobs(c.logprobs) if chat else _text_logprobs(c.logprobs)


def _ids(c: AnswerChoice) -> dict[str, Any]:
    """vLLM's return_token_ids fields, when the request asked for them."""
    if c.token_ids is None:
        return {}
    return {"token_ids": c.token_ids, "prompt_token_ids": c.prompt_token_ids}


def chat_body(a: Answer, rid: str, created: int) -> dict[str, Any]:
    choices = [
        {
            "index": c.index,
            "message": {"role": "assistant", "content": c.text, "refusal": None},
            "logprobs": _logprobs(c, True),
            "finish_reason": c.finish_reason,
        }
        | _ids(c)
        for c in a.choices
    ]
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": a.model,
        "choices": choices,
        "usage": _usage(a),
        "system_fingerprint": None,
    }


def completion_body(a: Answer, rid: str, created: int) -> dict[str, Any]:
    choices = [
        {
            "index": c.index,
            "text": c.text,
            "logprobs": _logprobs(c, False),
            "finish_reason": c.finish_reason,
        }
        | _ids(c)
        for c in a.choices
    ]
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": a.model,
        "choices": choices,
        "usage": _usage(a),
    }


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


def chat_stream(a: Answer, rid: str, created: int, include_usage: bool) -> Iterator[str]:
    head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": a.model}

    def chunk(index: int, delta: dict[str, Any], lp: Any, finish: str | None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return _sse(head | {"choices": [choice]})

    for c in a.choices:
        yield chunk(c.index, {"role": "assistant", "content": ""}, None, None)
        for t, piece in enumerate(c.pieces):
            lp = None
            if c.logprobs is not None and t < len(c.logprobs):
                lp = _chat_logprobs([c.logprobs[t]])
            yield chunk(c.index, {"content": piece}, lp, None)
        yield chunk(c.index, {}, None, c.finish_reason)
    if include_usage:
        yield _sse(head | {"choices": [], "usage": _usage(a)})
    yield "data: [DONE]\n\n"


def completion_stream(a: Answer, rid: str, created: int, include_usage: bool) -> Iterator[str]:
    head = {"id": rid, "object": "text_completion", "created": created, "model": a.model}
    for c in a.choices:
        at = 0
        for t, piece in enumerate(c.pieces):
            lp = None
            if c.logprobs is not None and t < len(c.logprobs):
                lp = _text_logprobs([c.logprobs[t]], at)
            at += len(piece)
            choice = {"index": c.index, "text": piece, "logprobs": lp, "finish_reason": None}
            yield _sse(head | {"choices": [choice]})
        end = {"index": c.index, "text": "", "logprobs": None, "finish_reason": c.finish_reason}
        yield _sse(head | {"choices": [end]})
    if include_usage:
        yield _sse(head | {"choices": [], "usage": _usage(a)})
    yield "data: [DONE]\n\n"
