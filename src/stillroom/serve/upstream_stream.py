"""A streamed reply from an upstream, passed to the client event by event as it arrives, and
what it said, assembled for the request's log row.

The upstream is always asked for usage (`stream_options.include_usage`): the log keeps token
counts and the limits settle on them. The usage-only event is dropped from the client's
stream unless the client asked for it too. Each event carries this gateway's request id, the
one its log row has, not the upstream's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from stillroom.serve.upstream_http import TRANSPORT_ERRORS, UpstreamStream

DONE = "data: [DONE]\n\n"


class StreamedAnswer:
    """One upstream stream being passed through; after `events` ends (or is abandoned),
    `texts`, the token counts, `error` and `complete` say what came of it."""

    def __init__(self, stream: UpstreamStream, *, chat: bool, want_usage: bool) -> None:
        self.stream, self.chat, self.want_usage = stream, chat, want_usage
        self.parts: dict[int, list[str]] = {}
        self.prompt_tokens = self.completion_tokens = 0
        self.error: str | None = None
        self.complete = False  # the upstream's [DONE] arrived

    def texts(self) -> list[str]:
        return ["".join(self.parts[i]) for i in sorted(self.parts)]

    async def events(self, rid: str, created: int) -> AsyncIterator[str]:
        """The client's server-sent events, as the upstream's arrive."""
        buf = b""
        try:
            async for chunk in self.stream.chunks():
                buf = (buf + chunk).replace(b"\r\n", b"\n")
                *whole, buf = buf.split(b"\n\n")
                for raw in whole:
                    out = self._event(raw, rid, created)
                    if out is not None:
                        yield out
        except TRANSPORT_ERRORS as e:
            self.error = f"the upstream's stream broke off: {type(e).__name__}"
        if self.complete:
            yield DONE
        elif self.error is None:
            self.error = "the upstream's stream ended without [DONE]"

    def close(self) -> None:
        """Synchronous: it runs in the cleanup of a request whose client may have left."""
        self.stream.close()

    def _event(self, raw: bytes, rid: str, created: int) -> str | None:
        data = b"".join(line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:"))
        if not data:
            return None  # a comment or keep-alive
        if data == b"[DONE]":
            self.complete = True
            return None  # sent after the last event, by `events`
        try:
            event = json.loads(data)
        except ValueError:
            self.error = "the upstream sent an event that is not JSON"
            return None
        if not isinstance(event, dict):
            return None
        if "error" in event:
            self.error = str((event["error"] or {}).get("message") or event["error"])[:500]
        self._take(event)
        if not self.want_usage:
            if event.get("usage") is not None and not event.get("choices"):
                return None  # the usage-only event the client did not ask for
            event.pop("usage", None)
        if "id" in event:
            event["id"], event["created"] = rid, created
        return "data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n\n"

    def _take(self, event: dict[str, Any]) -> None:
        for c in event.get("choices") or ():
            piece = (c.get("delta") or {}).get("content") if self.chat else c.get("text")
            parts = self.parts.setdefault(int(c.get("index", 0)), [])
            if piece:
                parts.append(str(piece))
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
