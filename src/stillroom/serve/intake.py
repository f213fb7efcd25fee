"""Request bodies, taken in with suspicion: a size limit enforced while the bytes arrive, and
JSON parsed only after the caller's key was checked, into text a database can store.

FastAPI reads and parses a route's declared body before its dependencies run, so an
unauthenticated client could make the gateway read and parse bodies of any size; the
generation routes therefore read their bodies themselves, after authentication.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stillroom.errors import APIError

Body = TypeVar("Body", bound=BaseModel)


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` stops being read at the limit and is answered
    413, whether its Content-Length said so up front or a chunked stream ran past it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            # Checked when the app first asks for the body, not on arrival: a request refused
            # for its key is refused for that, and its body is never read at all.
            if declared is not None and declared > self.max_bytes:
                raise self.too_large()
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self.too_large()
            return message

        await self.app(scope, limited, send)

    def too_large(self) -> HTTPException:
        # An HTTPException, because FastAPI passes those through its own body parsing as they
        # are (other errors there become a bare 400).
        return HTTPException(
            413, f"the request body is over {self.max_bytes} bytes; send a smaller one"
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# A lone surrogate can only come from a JSON escape in the D800-DFFF range: bodies without
# one skip the walk over every string.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


async def read_body(request: Request, model: type[Body]) -> Body:
    """The request's JSON body as `model`, or an APIError / RequestValidationError naming what
    is wrong; call it only once the caller is authenticated."""
    raw = await request.body()
    data = parse_json(raw)
    if SURROGATE_ESCAPE.search(raw):  # strict UTF-8 decoding let no other kind through
        check_text(data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad_body(
            f"the request body is not UTF-8 (byte {e.start}); send UTF-8 JSON"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad_body(
            f"the request body is not valid JSON ({e.msg} at character {e.pos})"
        ) from None
    except RecursionError:
        raise _bad_body(
            "the request body is nested too deeply; send a flatter JSON object"
        ) from None


def check_text(value: Any) -> None:
    """Refuse a string with a lone surrogate (JSON allows the escape, e.g. "\\ud800"): it is
    not Unicode text, so no tokenizer or database can take it. Walked without recursion: the
    body may be nested as deep as the JSON parser allowed."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            _check_string(path, item)
        elif isinstance(item, dict):
            for key in item:
                _check_string(path, key)
            # Pushed last first, so the first field at fault is the one named.
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            pairs = reversed(list(enumerate(item)))
            stack.extend((f"{path}.{i}" if path else str(i), x) for i, x in pairs)


def _check_string(path: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise APIError(
            400,
            f"{path or 'body'}: the text holds a lone surrogate (\\u{ord(text[e.start]):04x} "
            f"at character {e.start}), which is not Unicode; send valid text",
            param=path or None,
            code="invalid_request",
        ) from None


def _bad_body(message: str) -> APIError:
    return APIError(400, message, code="invalid_request")


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads `model` itself: its schema stays documented."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def document_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the self-read bodies' schemas to the app's OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _, defs = models_json_schema(
                [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
