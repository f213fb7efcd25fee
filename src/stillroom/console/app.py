"""`create_console_app`: the review console on a gateway database.

Pages are rendered on the server (jinja2, templates/); the only thing a browser runs is the
HTML. Every route but /login and /health needs a session; every POST is a form with the
session's CSRF token. Tokens only ever travel in a login form's body: never in a URL, a page
or a log line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from stillroom.console import accounts_page, actions, auth, store, views
from stillroom.console import cases as C
from stillroom.console.auth import COOKIE, LOGIN_COOKIE, ConsoleSettings, LoginNeeded
from stillroom.console.store import ConsoleError

CaseId = Annotated[int, Path(ge=1, le=2**31 - 1)]
CaseQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
TRAIL_SHOWN = 1000  # the newest entries on the trail page; the export has them all
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def create_console_app(engine: Engine, settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    store.create_tables(engine)
    app = FastAPI(title="stillroom console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.idle_s = settings.idle_minutes * 60

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[..., Awaitable[Any]]) -> Any:
        response = await call_next(request)
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    _errors(app)
    _login_routes(app, engine, settings)
    _page_routes(app, engine)
    actions.add_routes(app, engine)
    accounts_page.add_routes(app, engine)
    _api_routes(app, engine)
    return app


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path.endswith(".jsonl")


def _errors(app: FastAPI) -> None:
    @app.exception_handler(LoginNeeded)
    async def login_needed(request: Request, _e: LoginNeeded) -> Response:
        if wants_json(request):
            return _json_error(401, "log in first: POST your token to /login")
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(ConsoleError)
    async def console_error(request: Request, e: ConsoleError) -> Response:
        if wants_json(request):
            return _json_error(e.status, str(e))
        return HTMLResponse(
            views.page("error.html.j2", message=str(e), status=e.status, session=None),
            status_code=e.status,
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'request'}: {err.get('msg')}"
            for err in e.errors()
        )
        message = f"bad request: {problems}; fix the address and try again"
        if wants_json(request):
            return _json_error(422, message)
        return HTMLResponse(
            views.page("error.html.j2", message=message, status=422, session=None), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        message = "no such page" if e.status_code == 404 else str(e.detail)
        if wants_json(request):
            return _json_error(e.status_code, message)
        return HTMLResponse(
            views.page("error.html.j2", message=message, status=e.status_code, session=None),
            status_code=e.status_code,
        )


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "status": status}}, status_code=status)


def _login_routes(app: FastAPI, engine: Engine, settings: ConsoleSettings) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, failed: str = "") -> Response:
        csrf = auth.login_csrf(request)
        html = views.page("login.html.j2", csrf=csrf, failed=bool(failed), session=None)
        response = HTMLResponse(html)
        response.set_cookie(
            LOGIN_COOKIE,
            csrf,
            max_age=3600,
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookies,
            path="/login",
        )
        return response

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await auth.read_form(request, request.cookies.get(LOGIN_COOKIE))
        token = form.get("token", "")
        made = None
        if 0 < len(token) <= 200:
            made = await asyncio.to_thread(
                store.login, engine, token, settings.session_hours * 3600
            )
        if made is None:
            await asyncio.sleep(0.2)  # a guess costs the guesser, not the console
            return RedirectResponse("/login?failed=1", status_code=303)
        response = RedirectResponse("/", status_code=303)
        auth.set_session_cookie(response, made[0], settings)
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        session = await auth.current(engine, request)
        await auth.read_form(request, session.csrf)
        await asyncio.to_thread(store.logout, engine, request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response


def _page_routes(app: FastAPI, engine: Engine) -> None:
    @app.get("/", response_class=HTMLResponse)
    async def queue_page(request: Request, raw: Filtered) -> Response:
        session = await auth.current(engine, request)
        f = C.check_filters(*raw)
        rows, total = await asyncio.to_thread(C.queue, engine, f)
        pages = max(1, -(-total // C.PAGE))
        return HTMLResponse(
            views.page(
                "queue.html.j2",
                session=session,
                cases=rows,
                total=total,
                f=f,
                pages=pages,
                statuses=C.STATUSES,
                severities=C.SEVERITIES,
            )
        )

    @app.get("/cases/{case_id}", response_class=HTMLResponse)
    async def case_page(request: Request, case_id: CaseId) -> Response:
        session = await auth.current(engine, request)
        data = await asyncio.to_thread(_case_view, engine, case_id)
        return HTMLResponse(
            views.page("case.html.j2", session=session, c=data, policies=C.POLICIES)
        )

    @app.get("/cases/{case_id}/{picture}.png")
    async def picture(request: Request, case_id: CaseId, picture: str) -> Response:
        await auth.current(engine, request)
        if picture not in views.KINDS:
            raise ConsoleError(f"no picture {picture!r}; there are {', '.join(views.KINDS)}", 404)
        png = await asyncio.to_thread(views.png, engine, case_id, picture)
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"}
        )

    @app.get("/trail", response_class=HTMLResponse)
    async def trail_page(request: Request) -> Response:
        session = await auth.current(engine, request)
        rows = await asyncio.to_thread(store.entries, engine, None, TRAIL_SHOWN, True)
        return HTMLResponse(views.page("trail.html.j2", session=session, entries=rows))

    @app.get("/trail.jsonl")
    async def trail_export(
        request: Request, case: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None
    ) -> Response:
        await auth.current(engine, request)
        rows = await asyncio.to_thread(store.entries, engine, case, None)
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        name = f"trail-case-{case}.jsonl" if case is not None else "trail.jsonl"
        disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(body, media_type="application/x-ndjson", headers=disposition)


def queue_filters(
    status: str = "", severity: str = "", min_accounts: str = "1", q: str = "", page: str = "1"
) -> tuple[str, str, str, str, str]:
    """The queue's filters from the query string, as text: checked (`check_filters`, which
    names a bad one) only once the session is, so a visitor not logged in learns nothing."""
    return status, severity, min_accounts or "1", q, page or "1"


Filtered = Annotated[tuple[str, str, str, str, str], Depends(queue_filters)]


def _case_view(engine: Engine, case_id: int) -> dict[str, Any]:
    data = C.case(engine, case_id)
    data["recent"] = C.recent_prompts(engine, [a["account_id"] for a in data["accounts"]])
    data["trail"] = store.entries(engine, case_id)
    data["traces"] = C.traces(engine, case_id)
    return data


def _api_routes(app: FastAPI, engine: Engine) -> None:
    @app.get("/api/cases")
    async def api_cases(request: Request, raw: Filtered) -> dict[str, Any]:
        await auth.current(engine, request)
        rows, total = await asyncio.to_thread(C.queue, engine, C.check_filters(*raw))
        return {"total": total, "page_size": C.PAGE, "data": rows}

    @app.get("/api/cases/{case_id}")
    async def api_case(request: Request, case_id: CaseId) -> dict[str, Any]:
        await auth.current(engine, request)
        return await asyncio.to_thread(_case_view, engine, case_id)

    @app.get("/api/cases/{case_id}/trail")
    async def api_trail(request: Request, case_id: CaseId) -> dict[str, Any]:
        await auth.current(engine, request)
        await asyncio.to_thread(C.case, engine, case_id)  # 404 for a case that is not there
        return {"data": await asyncio.to_thread(store.entries, engine, case_id, None)}
