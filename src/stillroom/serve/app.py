"""`create_app`: the OpenAI-compatible gateway.

Every generation request goes: key (missing or unknown: 401, or 429 once the address has
spent its keyless requests) -> account (blocked? 403) -> body, read only now and capped while
it arrives (413) -> checks (400) -> limits (429 + Retry-After) -> backend -> one committed log
row -> reply -> how the reply went out, in that row. A request that fails before the backend
never reaches the model; a reply is never sent for a request the log does not hold; every
refusal is in OpenAI's error envelope.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from stillroom.errors import APIError, BackendError, LogWriteError
from stillroom.serve import replies
from stillroom.serve.accounts import Principal
from stillroom.serve.admin import admin_router
from stillroom.serve.backends import Backend
from stillroom.serve.db import CLIENT_GONE, DELIVERED, PARTIAL, SENDING
from stillroom.serve.gateway import Gateway, ServeSettings
from stillroom.serve.intake import BodyLimit, body_schema, document_bodies, read_body
from stillroom.serve.log import LogRow, RequestLog, as_json
from stillroom.serve.schemas import ChatRequest, CompletionRequest
from stillroom.serve.upstream_stream import StreamedAnswer


def create_app(  # long: the routes are closures over one gateway's state
    engine: Engine, backend: Backend, settings: ServeSettings | None = None
) -> FastAPI:
    settings = settings or ServeSettings()
    gw = Gateway(engine, backend, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await gw.log.aclose()
        await gw.aclose()
        await backend.aclose()

    # The schema lists the admin routes: served only when the operator asks for it.
    docs = settings.api_docs
    app = FastAPI(
        title="stillroom gateway",
        version="1",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.gateway = gw
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    document_bodies(app, [ChatRequest, CompletionRequest])
    _add_error_handlers(app, gw)

    async def authenticate(request: Request) -> Principal:
        return await _authenticate(gw, request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": backend.model_id,
            "watermark_key_id": backend.watermark_key_id,
        }

    @app.get("/v1/models")
    async def models(_who: Principal = Depends(authenticate)) -> dict[str, Any]:
        entry = {"id": backend.model_id, "object": "model", "created": 0, "owned_by": "stillroom"}
        return {"object": "list", "data": [entry]}

    # The bodies are read in the routes, after `authenticate`: see `intake`.
    @app.post("/v1/chat/completions", response_model=None, openapi_extra=body_schema(ChatRequest))
    async def chat(request: Request, who: Principal = Depends(authenticate)) -> Response:
        body = await read_body(request, ChatRequest)
        return await _generate(gw, "chat.completions", body, request, who)

    @app.post("/v1/completions", response_model=None, openapi_extra=body_schema(CompletionRequest))
    async def completions(request: Request, who: Principal = Depends(authenticate)) -> Response:
        body = await read_body(request, CompletionRequest)
        return await _generate(gw, "completions", body, request, who)

    app.include_router(admin_router(gw, settings.admin_token))
    return app


async def _authenticate(gw: Gateway, request: Request) -> Principal:
    request.state.started = time.perf_counter()
    request.state.arrived = time.time()
    request.state.principal = None
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise await _anonymous_refusal(
            gw,
            request,
            APIError(
                401,
                "missing API key: send the header 'Authorization: Bearer <key>'",
                code="missing_api_key",
            ),
        )
    who = await gw.principal(key.strip())
    if who is None:
        raise await _anonymous_refusal(
            gw,
            request,
            APIError(
                401,
                "invalid API key: it is unknown or revoked; ask the operator for a key",
                code="invalid_api_key",
            ),
        )
    request.state.principal = who
    if who.account.blocked:
        reason = f" ({who.account.blocked_reason})" if who.account.blocked_reason else ""
        raise APIError(
            403,
            f"account {who.account.name!r} is blocked{reason}; contact the operator",
            type="permission_error",
            code="account_blocked",
        )
    return who


async def _anonymous_refusal(gw: Gateway, request: Request, refusal: APIError) -> APIError:
    """`refusal`, or a 429 once the client's address has spent its keyless requests."""
    addr = request.client.host if request.client else "unknown"
    wait = await gw.admit_anonymous(addr)
    if wait <= 0:
        return refusal
    return APIError(
        429,
        f"too many requests without a valid API key from {addr}; retry after {wait:.1f} s",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def _add_error_handlers(app: FastAPI, gw: Gateway) -> None:
    """Every refusal in OpenAI's envelope, and in the log when it was a generation request."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        await _log_failure(gw, request, e.status, e.message)
        return _response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            msg = "the request body is not valid JSON; send a JSON object"
        else:
            msg = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
        return await _api_error(request, APIError(400, msg, param=param, code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(e.status_code, "invalid_request")
        err = APIError(e.status_code, str(e.detail), code=code, headers=dict(e.headers or {}))
        return await _api_error(request, err)

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception) -> JSONResponse:
        err = APIError(
            500, f"internal error ({type(e).__name__})", type="api_error", code="internal_error"
        )
        return await _api_error(request, err)


async def _generate(  # long: one request from admission to its log row, in order
    gw: Gateway,
    endpoint: str,
    body: ChatRequest | CompletionRequest,
    request: Request,
    who: Principal,
) -> Response:
    chat = isinstance(body, ChatRequest)
    backend = gw.backend
    if not backend.proxy and body.model != backend.model_id:  # a proxy lets upstream decide
        raise APIError(
            404,
            f"model {body.model!r} does not exist here; this server serves "
            f"{backend.model_id!r} (see /v1/models)",
            code="model_not_found",
            param="model",
        )
    _check_max_tokens(body, backend.max_tokens_limit)
    reserve = _token_estimate(body, gw.settings.default_max_tokens)
    acct = who.account
    wait = await gw.admit(acct.id, acct.rpm_limit, acct.tpm_limit, reserve)
    if wait > 0:
        raise APIError(
            429,
            f"rate limit reached for account {acct.name!r}; retry after {wait:.1f} s",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    # The request's half of the log row is built while the model works, not in the burst
    # of replies that a finished batch releases at once.
    row = _row(request, endpoint, 200, body)
    # A backend that forwards to an upstream passes its streams through (UpstreamBackend's
    # open_stream); a local model's answer is streamed once whole, as below.
    open_stream = getattr(backend, "open_stream", None) if body.stream else None
    if open_stream is not None:
        return await _stream_through(gw, open_stream, body, request, row, (acct.id, reserve))
    # The backend's time is the whole call, reply conversion included: exactly what a
    # server without the gateway would do, so the rest is the gateway's own overhead.
    called = time.perf_counter()
    try:
        answer = await (
            backend.chat(body) if isinstance(body, ChatRequest) else backend.completion(body)
        )
    except BackendError as e:
        gw.settle(acct.id, reserve, 0)
        raise _backend_failed(e) from None
    backend_ms = (time.perf_counter() - called) * 1e3
    gw.settle(acct.id, reserve, answer.prompt_tokens + answer.completion_tokens)
    rid = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    created = int(request.state.arrived)
    row.id = rid
    row.response_text = as_json([c.text for c in answer.choices])
    row.prompt_tokens, row.completion_tokens = answer.prompt_tokens, answer.completion_tokens
    row.backend_ms = backend_ms
    row.watermark_key_id = answer.watermark_key_id
    row.latency_ms = (time.perf_counter() - request.state.started) * 1e3
    row.delivery = SENDING  # until the reply is out: see `Delivered`
    try:
        await gw.log.write(row)
    except LogWriteError as e:
        # No silent loss: the client is told, and may retry. Returned, not raised: the
        # failure log row would meet the same broken log.
        return _log_failed(e)
    # What the gateway added to the backend's time, log commit included: for clients and
    # for benchmarks (Server-Timing is a standard header browsers and tools read).
    total_ms = (time.perf_counter() - request.state.started) * 1e3
    timing = {
        "Server-Timing": f"backend;dur={backend_ms:.3f}, gateway;dur={total_ms - backend_ms:.3f}"
    }
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:
        stream = (replies.chat_stream if chat else replies.completion_stream)(
            answer, rid, created, include_usage
        )
        streamed = StreamingResponse(stream, media_type="text/event-stream", headers=timing)
        return Delivered(streamed, gw.log, rid)
    reply = (replies.chat_body if chat else replies.completion_body)(answer, rid, created)
    return Delivered(JSONResponse(reply, headers=timing), gw.log, rid)


async def _stream_through(
    gw: Gateway,
    open_stream: Callable[[ChatRequest | CompletionRequest], Awaitable[StreamedAnswer]],
    body: ChatRequest | CompletionRequest,
    request: Request,
    row: LogRow,
    reserved: tuple[str, int],  # the account, and the tokens its limit holds for this
) -> Response:
    """An upstream's stream passed to the client as it comes. The row, with the request, is
    committed before the first byte goes out, as for every reply; what was answered is
    recorded (`RequestLog.finish`) once the stream has ended or the client has left."""
    account, reserve = reserved
    called = time.perf_counter()
    try:
        answer = await open_stream(body)
    except BackendError as e:
        gw.settle(account, reserve, 0)
        raise _backend_failed(e) from None
    chat = isinstance(body, ChatRequest)
    rid = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    row.id, row.delivery = rid, SENDING
    try:
        await gw.log.write(row)
    except LogWriteError as e:
        answer.close()
        gw.settle(account, reserve, 0)
        return _log_failed(e)
    except BaseException:  # cancelled (its client left) before the reply began
        answer.close()  # else its connection, and its slot in the pool, would be held
        gw.settle(account, reserve, 0)
        raise

    def ended() -> None:
        answer.close()
        gw.settle(account, reserve, answer.prompt_tokens + answer.completion_tokens)
        now = time.perf_counter()
        gw.log.finish(
            rid,
            response_text=as_json(answer.texts()),
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            backend_ms=(now - called) * 1e3,
            latency_ms=(now - request.state.started) * 1e3,
            error=answer.error,
        )

    events = answer.events(rid, int(request.state.arrived))
    streamed = StreamingResponse(events, media_type="text/event-stream")
    return Delivered(streamed, gw.log, rid, ended=ended)


def _backend_failed(e: BackendError) -> APIError:
    kind = "api_error" if e.status >= 500 else "invalid_request_error"
    return APIError(e.status, str(e), type=kind, code=e.code)


def _log_failed(e: LogWriteError) -> JSONResponse:
    failed = APIError(
        500,
        f"the request log could not be written ({e}); the request was not served, retry later",
        type="api_error",
        code="log_failed",
    )
    return _response(failed)


class Delivered(Response):
    """`reply` sent as it is; then its log row records whether its whole body reached the
    client (the served-answer test counts only what a client received).

    Delivered means the end of the body was handed to the connection with the client still
    on it: what a server can know. The client may be gone before any of it ("client_gone"),
    or leave a stream before its end ("partial", whatever the server did next)."""

    def __init__(
        self,
        reply: Response,
        log: RequestLog,
        request_id: str,
        ended: Callable[[], None] | None = None,  # run first once the reply is done or cut
    ) -> None:
        # Not Response.__init__: the body, status and headers are all `reply`'s.
        self.reply, self.log, self.request_id, self.ended = reply, log, request_id, ended
        self.status_code, self.raw_headers = reply.status_code, reply.raw_headers
        self.background = None  # FastAPI hangs its background tasks here

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = _Watch(Request(scope, receive), send)
        try:
            await self.reply(scope, receive, watch.send)
        finally:  # cancelled too (Starlette stops a stream whose client left): a row is marked
            if self.ended is not None:
                self.ended()
            self.log.mark(self.request_id, watch.outcome())
        if self.background is not None:
            await self.background()


class _Watch:
    """An ASGI `send`, watched: whether any of the body went out, and whether its end did
    with the client still there."""

    def __init__(self, request: Request, send: Send) -> None:
        self._request, self._send = request, send
        self.started = self.ended = self.gone = False

    async def send(self, message: Message) -> None:
        body = message["type"] == "http.response.body"
        last = body and not message.get("more_body", False)
        # A server may drop a send to a closed connection without a word (uvicorn does), so
        # the client is looked for before the first of the body and before its end.
        # (Its body all read, the request's `receive` has nothing left but the disconnect,
        # and `is_disconnected` takes only what is already there.)
        if body and (last or not self.started) and not self.gone:
            self.gone = await self._request.is_disconnected()
        try:
            await self._send(message)
        except OSError:  # how an ASGI 2.4 server says the connection is closed
            self.gone = True
            raise
        if body and not self.gone:
            self.started = self.started or bool(message.get("body")) or last
            self.ended = last

    def outcome(self) -> str:
        if self.ended:
            return DELIVERED
        return PARTIAL if self.started else CLIENT_GONE


def _check_max_tokens(body: ChatRequest | CompletionRequest, limit: int) -> None:
    """Refuse a token limit the backend cannot honour, rather than cut it without a word."""
    asked = body.token_limit()
    if asked is None or asked <= limit:
        return
    param = "max_tokens"
    if isinstance(body, ChatRequest) and body.max_completion_tokens is not None:
        param = "max_completion_tokens"
    raise APIError(
        400,
        f"{param} is {asked}, over this server's limit of {limit} tokens; ask for {limit} or fewer",
        param=param,
        code="invalid_request",
    )


def _response(e: APIError) -> JSONResponse:
    return JSONResponse(e.envelope(), status_code=e.status, headers=e.headers)


def _token_estimate(body: ChatRequest | CompletionRequest, default_max: int) -> int:
    """Worst-case tokens for the per-minute token limit: ~3 characters a token is generous
    for prompts, plus every choice running to max_tokens."""
    if isinstance(body, ChatRequest):
        chars = sum(len(m.text()) for m in body.messages)
        prompts = 1
    else:
        ids = body.token_prompts() or []
        chars = sum(len(p) for p in body.prompts()) + 3 * sum(len(i) for i in ids)
        prompts = len(body.prompts()) + len(ids)
    return chars // 3 + 1 + prompts * body.n * (body.token_limit() or default_max)


def _row(request: Request, endpoint: str, status: int, body: Any = None) -> LogRow:
    state = request.state
    who: Principal | None = getattr(state, "principal", None)
    row = LogRow(
        id="req_" + secrets.token_hex(12),
        created_at=getattr(state, "arrived", None) or time.time(),
        endpoint=endpoint,
        status=status,
        account_id=who.account.id if who else None,
        key_id=who.key_id if who else None,
        client_addr=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    if isinstance(body, ChatRequest | CompletionRequest):
        row.model = body.model
        params = body.model_dump(exclude_none=True, exclude={"messages", "prompt", "model"})
        row.params = as_json(params)
        if isinstance(body, ChatRequest):
            row.messages = as_json([{"role": m.role, "content": m.text()} for m in body.messages])
        else:
            row.prompt = body.prompt if isinstance(body.prompt, str) else as_json(body.prompt)
    return row


_ENDPOINTS = {"/v1/chat/completions": "chat.completions", "/v1/completions": "completions"}


async def _log_failure(gw: Gateway, request: Request, status: int, message: str) -> None:
    """Refused and failed generation requests are logged too: the audit wants the attempts."""
    endpoint = _ENDPOINTS.get(request.url.path)
    if endpoint is None:
        return
    row = _row(request, endpoint, status)
    row.error = message
    started = getattr(request.state, "started", None)
    if started is not None:
        row.latency_ms = (time.perf_counter() - started) * 1e3
    # The client gets its error either way; it was not served.
    with contextlib.suppress(LogWriteError):
        await gw.log.write(row)
