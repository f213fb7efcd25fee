"""The accounts pages: find an account, and see its keys, limits, block state, usage over
time and the cases it appears in. Read-only: what a reviewer does, they do on a case, so
that it lands in the case's trail."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import FastAPI, Path, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.engine import Engine

from stillroom.audit.runs_store import cases, unit_accounts
from stillroom.console import auth, figures, views
from stillroom.console import cases as C
from stillroom.console.store import ConsoleError
from stillroom.serve.db import accounts, api_keys, requests

AccountId = Annotated[str, Path(min_length=1, max_length=80)]
LISTED = 100


def find(engine: Engine, q: str) -> list[dict[str, Any]]:
    """Accounts whose id is `q` or whose name starts with it (blocked ones first); with no
    `q`, the blocked accounts and then the newest."""
    if len(q) > 200:
        raise ConsoleError("q: a search is at most 200 characters")
    s = sa.select(accounts)
    if q:
        s = s.where(
            sa.or_(
                accounts.c.id == q, sa.and_(accounts.c.name >= q, accounts.c.name < q + "\uffff")
            )
        )
    s = s.order_by(accounts.c.blocked_at.is_(None), accounts.c.created_at.desc()).limit(LISTED)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(s)]


def account(engine: Engine, account_id: str) -> dict[str, Any]:
    """One account as the gateway has it, its keys, its request count, and its cases."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(accounts).where(accounts.c.id == account_id)).first()
        if row is None:
            raise ConsoleError(f"no account {account_id!r}; search for it on /accounts", 404)
        keys = conn.execute(
            sa.select(api_keys.c.id, api_keys.c.label, api_keys.c.created_at, api_keys.c.revoked_at)
            .where(api_keys.c.account_id == account_id)
            .order_by(api_keys.c.created_at)
        ).all()
        n = conn.execute(
            sa.select(sa.func.count()).where(requests.c.account_id == account_id)
        ).scalar_one()
        held = conn.execute(
            sa.select(cases.c.id, cases.c.unit, cases.c.status)
            .where(
                cases.c.unit.in_(
                    sa.select(unit_accounts.c.unit).where(unit_accounts.c.account_id == account_id)
                )
            )
            .order_by(cases.c.id)
        ).all()
    return dict(row._mapping) | {
        "keys": [dict(k._mapping) for k in keys],
        "requests": int(n),
        "cases": [dict(c._mapping) for c in held],
    }


def add_routes(app: FastAPI, engine: Engine) -> None:
    @app.get("/accounts", response_class=HTMLResponse)
    async def accounts_page(request: Request, q: str = "") -> Response:
        session = await auth.current(engine, request)
        found = await asyncio.to_thread(find, engine, q.strip())
        page = views.page("accounts.html.j2", session=session, q=q, accounts=found, most=LISTED)
        return HTMLResponse(page)

    @app.get("/accounts/{account_id}", response_class=HTMLResponse)
    async def account_page(request: Request, account_id: AccountId) -> Response:
        session = await auth.current(engine, request)
        data = await asyncio.to_thread(account, engine, account_id)
        return HTMLResponse(views.page("account.html.j2", session=session, a=data))

    @app.get("/accounts/{account_id}/timeline.png")
    async def account_timeline(request: Request, account_id: AccountId) -> Response:
        await auth.current(engine, request)
        await asyncio.to_thread(account, engine, account_id)  # 404 for an unknown account
        hourly = await asyncio.to_thread(C.hourly_activity, engine, [account_id])
        png = await asyncio.to_thread(figures.timeline_png, hourly)
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"}
        )

    @app.get("/api/accounts/{account_id}")
    async def api_account(request: Request, account_id: AccountId) -> dict[str, Any]:
        await auth.current(engine, request)
        return await asyncio.to_thread(account, engine, account_id)
