"""What answers behind the gateway: a local model (micro-batched, optionally watermarked) or
an upstream OpenAI-compatible API (proxied, logged, never watermarked).

Both return an `Answer` in one shape; the app turns it into a reply body or a stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from stillroom.errors import BackendError as BackendError  # its home before the tree
from stillroom.serve.schemas import ChatRequest, CompletionRequest
from stillroom.serve.upstream_http import TRANSPORT_ERRORS, Reply, upstream_client
from stillroom.serve.upstream_stream import StreamedAnswer

UPSTREAM_MAX_TOKENS = 32768  # the most an upstream is asked for, unless the operator says


@dataclass
class TokenLogprob:
    token: str
    logprob: float | None  # None: a text's first token, which nothing predicts
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class AnswerChoice:
    index: int
    text: str
    finish_reason: str
    pieces: list[str]  # the text split the way it was generated, for streaming
    logprobs: list[TokenLogprob] | None = None
    raw_logprobs: Any = None  # an upstream's logprobs object, passed through as given
    # With return_token_ids: the answer's and its prompt's vocabulary ids.
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None


@dataclass
class Answer:
    model: str
    choices: list[AnswerChoice]
    prompt_tokens: int
    completion_tokens: int
    watermark_key_id: str | None = None


class Backend(Protocol):
    model_id: str
    proxy: bool  # True: forwards to another API, which decides what models exist
    watermark_key_id: str | None
    max_tokens_limit: int  # a request asking for more is refused, never silently cut

    async def chat(self, body: ChatRequest) -> Answer: ...

    async def completion(self, body: CompletionRequest) -> Answer: ...

    async def aclose(self) -> None: ...


class LocalBackend:
    """A local causal LM through `LocalTeacher`, whose queue micro-batches concurrent calls."""

    proxy = False

    def __init__(self, teacher: Any, *, default_max_tokens: int, max_tokens_limit: int) -> None:
        self.teacher = teacher
        self.model_id = str(teacher.model)
        key = getattr(teacher, "watermark", None)
        self.watermark_key_id: str | None = getattr(key, "key_id", None)
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = max_tokens_limit

    async def chat(self, body: ChatRequest) -> Answer:
        messages = tuple(
            (m.role if m.role != "developer" else "system", m.text()) for m in body.messages
        )
        return await self._run([(None, messages)], body, body.token_limit())

    async def completion(self, body: CompletionRequest) -> Answer:
        ids = body.token_prompts()
        if ids is not None:
            return await self._echo_ids(body, ids)
        if body.echo:
            return await self._echo(body)
        return await self._run([(p, None) for p in body.prompts()], body, body.token_limit())

    async def _echo(self, body: CompletionRequest) -> Answer:
        """Each prompt, then what was generated after it (nothing for max_tokens 0); with
        logprobs, the prompt's tokens carry the model's log-probs too."""
        import asyncio

        prompts = body.prompts()
        try:
            scored = await asyncio.to_thread(self.teacher.prompt_logprobs, prompts, body.top_k())
        except Exception as e:
            raise _backend_error(e) from e
        generated = None
        if body.max_tokens != 0:
            generated = await self._run([(p, None) for p in prompts], body, body.token_limit())
        choices: list[AnswerChoice] = []
        for i, (prompt, s) in enumerate(zip(prompts, scored, strict=True)):
            pieces = self._pieces(s.ids, prompt)
            lps = self._prompt_logprobs(s, pieces, body) if body.wants_logprobs() else None
            for j in range(body.n):
                gen = generated.choices[i * body.n + j] if generated is not None else None
                choices.append(
                    AnswerChoice(
                        len(choices),
                        prompt + (gen.text if gen else ""),
                        gen.finish_reason if gen else "length",
                        pieces + (gen.pieces if gen else []),
                        None if lps is None else lps + ((gen.logprobs or []) if gen else []),
                    )
                )
        return Answer(
            self.model_id,
            choices,
            sum(len(s.ids) for s in scored),
            generated.completion_tokens if generated is not None else 0,
            self.watermark_key_id,
        )

    async def _echo_ids(self, body: CompletionRequest, sequences: list[list[int]]) -> Answer:
        """Token-id prompts, scored as given (no re-tokenizing): what on-policy training
        sends to score a student's tokens. Generating after ids is not offered here."""
        import asyncio

        if not body.echo or body.max_tokens != 0:
            raise BackendError(
                "prompt: token-id prompts are scored only; send them with echo: true and "
                "max_tokens: 0, or send text to generate",
                status=400,
                code="invalid_request",
            )
        vocab = self.teacher.vocab_size
        if any(i >= vocab for seq in sequences for i in seq):
            raise BackendError(
                f"prompt: token ids must be below the model's vocabulary size {vocab}",
                status=400,
                code="invalid_request",
            )
        try:
            scored = await asyncio.to_thread(
                self.teacher.sequence_logprobs, sequences, body.top_k()
            )
        except Exception as e:
            raise _backend_error(e) from e
        tok = self.teacher.tokenizer
        choices: list[AnswerChoice] = []
        for s in scored:
            text = str(tok.decode(s.ids, skip_special_tokens=True))
            pieces = self._pieces(s.ids, text)
            lps = self._prompt_logprobs(s, pieces, body) if body.wants_logprobs() else None
            for _ in range(body.n):
                choices.append(AnswerChoice(len(choices), text, "length", pieces, lps))
        used = sum(len(s.ids) for s in scored)
        return Answer(self.model_id, choices, used, 0, self.watermark_key_id)

    def _prompt_logprobs(
        self, s: Any, pieces: list[str], body: CompletionRequest
    ) -> list[TokenLogprob]:
        """The prompt's tokens with their log-probs; the first has none (OpenAI's null)."""
        name = self._namer(body.ids_as_tokens())
        k = body.top_k()
        out = []
        for t, token_id in enumerate(s.ids):
            token = name(token_id) if body.ids_as_tokens() else pieces[t]
            if t == 0:
                out.append(TokenLogprob(token, None, []))
                continue
            top = [
                (name(int(i)), float(v))
                for i, v in zip(s.top_ids[t - 1][:k], s.top_logprobs[t - 1][:k], strict=True)
            ]
            out.append(TokenLogprob(token, float(s.chosen[t - 1]), top))
        return out

    def _namer(self, as_ids: bool) -> Any:
        """How a token id is shown: "token_id:N" when asked (exact), else its text."""
        tok = self.teacher.tokenizer
        if as_ids:
            return lambda i: f"token_id:{i}"
        return lambda i: str(tok.decode([i]))

    async def _run(
        self,
        inputs: list[tuple[str | None, tuple[tuple[str, str], ...] | None]],
        body: ChatRequest | CompletionRequest,
        limit: int | None,
    ) -> Answer:
        import asyncio

        from stillroom.teachers.base import GenerationParams, TeacherRequest

        max_tokens = min(limit or self.default_max_tokens, self.max_tokens_limit)
        params = GenerationParams(
            max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=body.top_p,
            n=body.n,
            seed=body.seed,
            stop=body.stop_list(),
            top_logprobs=body.top_k(),
        )
        try:
            done = await asyncio.gather(
                *(self.teacher.complete(TeacherRequest(p, m, params)) for p, m in inputs)
            )
        except Exception as e:
            raise _backend_error(e) from e
        choices: list[AnswerChoice] = []
        prompt_tokens = completion_tokens = 0
        for completion in done:
            prompt_tokens += completion.usage.prompt_tokens
            completion_tokens += completion.usage.completion_tokens
            for c in completion.choices:
                ids = list(c.token_ids or [])
                if ids and ids[-1] in self.teacher.eos_token_ids:
                    ids = ids[:-1]
                pieces = self._pieces(ids, c.text)
                lps = (
                    self._logprobs(ids, pieces, c, body.ids_as_tokens())
                    if body.wants_logprobs()
                    else None
                )
                reason = "length" if c.finish_reason == "length" else "stop"
                choice = AnswerChoice(len(choices), c.text, reason, pieces, lps)
                if body.return_token_ids:
                    choice.token_ids = ids  # as its log-probs: without a final EOS
                    choice.prompt_token_ids = list(completion.prompt_token_ids or [])
                choices.append(choice)
        return Answer(
            self.model_id,
            choices,
            prompt_tokens,
            completion_tokens,
            self.watermark_key_id,
        )

    def _pieces(self, ids: list[int], text: str) -> list[str]:
        """Each token's share of the text: decoded prefixes, so multi-byte characters split
        across tokens land whole in the piece that completes them."""
        tok = self.teacher.tokenizer
        pieces, before = [], ""
        for i in range(len(ids)):
            now = str(tok.decode(ids[: i + 1], skip_special_tokens=True))
            if not text.startswith(now):  # a stop string cut the text inside this token,
                now = text  # or a partial character decoded as U+FFFD
            if len(now) < len(before):  # never hand out the same text twice
                now = before
            pieces.append(now[len(before) :])
            before = now
        if before != text:  # whatever decoding left over (never negative: text is a prefix)
            pieces.append(text[len(before) :])
        return pieces

    def _logprobs(
        self, ids: list[int], pieces: list[str], choice: Any, as_ids: bool
    ) -> list[TokenLogprob]:
        name = self._namer(as_ids)
        out = []
        lps = choice.token_logprobs or []
        for t, token_id in enumerate(ids):
            top: list[tuple[str, float]] = []
            if choice.top_ids is not None and t < len(choice.top_ids):
                top = [
                    (name(int(i)), float(lp))
                    for i, lp in zip(choice.top_ids[t], choice.top_logprobs[t], strict=True)
                ]
            piece = name(token_id) if as_ids or t >= len(pieces) else pieces[t]
            out.append(TokenLogprob(piece, float(lps[t]) if t < len(lps) else 0.0, top))
        return out

    async def aclose(self) -> None:
        await self.teacher.aclose()


def _backend_error(e: Exception) -> BackendError:
    """A model call's failure as the gateway reports it."""
    from stillroom.errors import TeacherFatalError

    if isinstance(e, TeacherFatalError):
        # Status 400: the request itself (an empty or too long prompt, chat without a
        # template); anything else is the model's side (its process died, it failed to
        # start), not the client's fault.
        if e.status == 400:
            return BackendError(str(e), status=400, code="invalid_request")
        return BackendError(str(e), status=503, code="backend_unavailable")
    # The model failed on a request it accepted.
    return BackendError(f"the model failed: {type(e).__name__}", status=502, code="backend_error")


class UpstreamBackend:
    """Forwards to an OpenAI-compatible API with the gateway's own upstream key."""

    watermark_key_id: str | None = None
    proxy = True

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        model: str | None = None,
        timeout_s: float = 300.0,
        max_tokens_limit: int = UPSTREAM_MAX_TOKENS,
    ) -> None:
        self.max_tokens_limit = max_tokens_limit
        self.base_url = base_url.rstrip("/")
        self.model_id = model or "upstream"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One client, its connections kept alive, for the backend's life (see upstream_http).
        self.client = upstream_client(self.base_url, headers=headers, timeout_s=timeout_s)

    async def chat(self, body: ChatRequest) -> Answer:
        return await self._forward("/chat/completions", body, chat=True)

    async def completion(self, body: CompletionRequest) -> Answer:
        return await self._forward("/completions", body, chat=False)

    async def _forward(
        self, path: str, body: ChatRequest | CompletionRequest, *, chat: bool
    ) -> Answer:
        # Not for streams: those pass through as they come (open_stream).
        payload = body.model_dump(exclude_none=True, exclude={"stream", "stream_options"})
        try:
            reply = await self.client.post(path, payload)
        except TRANSPORT_ERRORS as e:
            raise BackendError(f"upstream {self.base_url} unreachable: {type(e).__name__}") from e
        if reply.status_code >= 400:
            raise _refused(reply)
        try:
            data = reply.json()
            choices: list[AnswerChoice] = []
            for c in data["choices"]:
                text = (c.get("message") or {}).get("content") if chat else c.get("text")
                text = text or ""
                choices.append(
                    AnswerChoice(
                        int(c.get("index", len(choices))),
                        text,
                        c.get("finish_reason") or "stop",
                        [text] if text else [],
                        raw_logprobs=c.get("logprobs"),
                    )
                )
            usage = data.get("usage") or {}
            return Answer(
                str(data.get("model") or self.model_id),
                choices,
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BackendError(
                f"upstream {self.base_url} sent a reply that is not an OpenAI completion"
            ) from None

    async def open_stream(self, body: ChatRequest | CompletionRequest) -> StreamedAnswer:
        """The upstream's streamed reply, its head read (so a refusal is a BackendError
        before the gateway commits anything); its events pass through as they come."""
        chat = isinstance(body, ChatRequest)
        payload = body.model_dump(exclude_none=True)
        payload["stream"] = True
        payload["stream_options"] = {**payload.get("stream_options", {}), "include_usage": True}
        path = "/chat/completions" if chat else "/completions"
        try:
            stream = await self.client.open(path, payload)
        except TRANSPORT_ERRORS as e:
            raise BackendError(f"upstream {self.base_url} unreachable: {type(e).__name__}") from e
        if stream.status_code >= 400:
            try:
                reply = Reply(stream.status_code, await stream.read())
            except TRANSPORT_ERRORS:
                reply = Reply(stream.status_code, b"")
            finally:
                stream.close()
            raise _refused(reply)
        want = bool(body.stream_options and body.stream_options.include_usage)
        return StreamedAnswer(stream, chat=chat, want_usage=want)

    async def aclose(self) -> None:
        await self.client.aclose()


def _refused(reply: Reply) -> BackendError:
    status = reply.status_code if reply.status_code in (400, 404, 422, 429) else 502
    return BackendError(
        f"upstream answered {reply.status_code}: {_message(reply)}",
        status=status,
        code="upstream_error",
    )


def _message(reply: Reply) -> str:
    try:
        err = reply.json().get("error") or {}
        return str(err.get("message") or reply.text[:200])
    except (ValueError, AttributeError):
        return reply.text[:200]
