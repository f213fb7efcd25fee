"""Who is asking, and may they: sessions from the cookie, roles, CSRF-checked forms.

Forms are read here, not by a form library: the console only takes small url-encoded
forms, and reading them by hand keeps the body limit and the CSRF check in one place. The
CSRF token of a logged-in form is the session's own; the login form, before any session,
pairs a random cookie with the same value in a hidden field.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from sqlalchemy.engine import Engine

from stillroom.console import store
from stillroom.console.store import ConsoleError, Session

COOKIE = "stillroom_console"
LOGIN_COOKIE = "stillroom_console_login"
MAX_FORM_BYTES = 16 * 1024
MAX_FIELDS = 16


@dataclass(frozen=True)
class ConsoleSettings:
    session_hours: float = 8.0  # a session ends this long after its login
    idle_minutes: float = 30.0  # ... or once unused for this long
    secure_cookies: bool = False  # set behind HTTPS: cookies then go over HTTPS only


class LoginNeeded(Exception):
    """No live session: pages send the reader to log in, JSON routes answer 401."""


async def current(engine: Engine, request: Request) -> Session:
    idle_s = getattr(request.app.state, "idle_s", float("inf"))
    cookie = request.cookies.get(COOKIE)
    if not cookie or len(cookie) > 100:
        raise LoginNeeded
    found = await asyncio.to_thread(store.session, engine, cookie, idle_s)
    if found is None:
        raise LoginNeeded
    return found


def require(session: Session, role: str, doing: str) -> None:
    if not session.reviewer.may(role):
        raise ConsoleError(
            f"{doing}: your role ({session.reviewer.role}) may not; it needs {role} or "
            "higher (an admin can change roles)",
            403,
        )


async def read_form(request: Request, csrf: str | None) -> dict[str, str]:
    """The url-encoded form of `request`, refused unless its `csrf` field matches `csrf`
    (the session's, or for the login form the login cookie's)."""
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_FORM_BYTES:
        raise ConsoleError(f"a form is at most {MAX_FORM_BYTES} bytes", 413)
    body = b""
    async for chunk in request.stream():  # a chunked body has no length to check first
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ConsoleError(f"a form is at most {MAX_FORM_BYTES} bytes", 413)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise ConsoleError(
            "a form must be sent as application/x-www-form-urlencoded (submit the page's form)",
            415,
        )
    try:
        fields = parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            strict_parsing=bool(body),
        )
    except (UnicodeDecodeError, ValueError):
        raise ConsoleError(
            "the form is not valid url-encoded UTF-8; submit the page's form"
        ) from None
    form = {k: v[-1] for k, v in fields.items()}
    given = form.get("csrf", "")
    if not csrf or not given or not hmac.compare_digest(given.encode(), csrf.encode()):
        raise ConsoleError(
            "form refused: its CSRF token is missing or stale; reload the page and submit "
            "the form again",
            403,
        )
    return form


def text_field(form: dict[str, str], name: str, *, limit: int = 2000, needed: bool = True) -> str:
    value = form.get(name, "").strip()
    if needed and not value:
        raise ConsoleError(f"{name}: required; write why (it goes into the audit trail)")
    if len(value) > limit:
        raise ConsoleError(f"{name}: at most {limit} characters, got {len(value)}")
    return value


def set_session_cookie(response: Any, cookie: str, settings: ConsoleSettings) -> None:
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(settings.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path="/",
    )


def login_csrf(request: Request) -> str:
    """The login form's CSRF value: the visitor's login cookie, or a new one."""
    value = request.cookies.get(LOGIN_COOKIE, "")
    return value if 20 <= len(value) <= 100 else secrets.token_urlsafe(24)
