"""The fake server's streamed replies: a whole reply told as OpenAI's chunk events."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


def stream_events(reply: dict[str, Any], body: Any, chat: bool) -> Iterable[dict[str, Any]]:
    """OpenAI's chunk events for a whole reply: each choice's words, then its finish; then
    the usage, when the request's stream_options ask for it."""
    head: dict[str, Any] = {k: reply[k] for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk" if chat else "text_completion"
    for c in reply["choices"]:
        text = (c.get("message") or {}).get("content", "") if chat else c.get("text", "")
        pieces = re.findall(r"\s*\S+\s*|\s+", text or "") or [""]
        for k, piece in enumerate(pieces):
            part: dict[str, Any]
            if chat:
                delta = {"role": "assistant", "content": piece} if k == 0 else {"content": piece}
                part = {"index": c["index"], "delta": delta, "logprobs": None}
            else:
                part = {"index": c["index"], "text": piece, "logprobs": None}
            yield head | {"choices": [part | {"finish_reason": None}]}
        end: dict[str, Any] = {"index": c["index"], "finish_reason": c["finish_reason"]}
        if chat:
            end["delta"] = {}
        else:
            end["text"] = ""
        yield head | {"choices": [end]}
    options = body.get("stream_options") if isinstance(body, dict) else None
    if isinstance(options, dict) and options.get("include_usage"):
        yield head | {"choices": [], "usage": reply["usage"]}
