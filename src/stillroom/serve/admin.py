"""The admin API: accounts and keys over HTTP, behind an admin token.

Without a token configured, the admin API answers 404: an operator who did not ask for it
has no admin surface exposed.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from stillroom.errors import AccountError, APIError
from stillroom.serve import accounts as acc
from stillroom.serve.accounts import MAX_LIMIT
from stillroom.serve.gateway import Gateway


class NewAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    rpm_limit: int | None = Field(None, ge=1, le=MAX_LIMIT)
    tpm_limit: int | None = Field(None, ge=1, le=MAX_LIMIT)


class BlockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=500)


class NewKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None = Field(None, max_length=200)


def admin_router(  # long: the routes are closures over one gateway's state
    gw: Gateway, token: str | None
) -> APIRouter:
    async def admin(request: Request) -> None:
        if token is None:
            raise APIError(
                404, "the admin API is off; start serve with --admin-token-file", code="not_found"
            )
        header = request.headers.get("authorization", "")
        given = header.partition(" ")[2].strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise APIError(
                401,
                "admin API: send 'Authorization: Bearer <admin token>'",
                code="invalid_admin_token",
            )

    router = APIRouter(prefix="/admin", dependencies=[Depends(admin)])

    async def call(fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, gw.engine, *args, **kw)
        except AccountError as e:
            status = 404 if str(e).startswith("no ") else 400
            raise APIError(status, str(e), code="account_error") from None

    @router.get("/accounts")
    async def list_accounts() -> dict[str, Any]:
        return {"data": [asdict(a) for a in await call(acc.list_accounts)]}

    @router.post("/accounts", status_code=201)
    async def create_account(body: NewAccount) -> dict[str, Any]:
        account, key = await call(
            acc.create_account, body.name, rpm_limit=body.rpm_limit, tpm_limit=body.tpm_limit
        )
        return {"account": asdict(account), "key": key.key, "key_id": key.info.id}

    @router.post("/accounts/{account}/block")
    async def block(account: str, body: BlockBody | None = None) -> dict[str, Any]:
        a = await call(acc.set_blocked, account, True, body.reason if body else None)
        gw.forget_account(a.id)
        return asdict(a)

    @router.post("/accounts/{account}/unblock")
    async def unblock(account: str) -> dict[str, Any]:
        a = await call(acc.set_blocked, account, False)
        gw.forget_account(a.id)
        return asdict(a)

    @router.get("/accounts/{account}/keys")
    async def keys(account: str) -> dict[str, Any]:
        return {"data": [asdict(k) for k in await call(acc.list_keys, account)]}

    @router.post("/accounts/{account}/keys", status_code=201)
    async def new_key(account: str, body: NewKeyBody | None = None) -> dict[str, Any]:
        key = await call(acc.create_key, account, label=body.label if body else None)
        return {"key": key.key, "key_id": key.info.id}

    @router.delete("/keys/{key_id}")
    async def revoke(key_id: str) -> dict[str, Any]:
        info = await call(acc.revoke_key, key_id)
        gw.forget_account(info.account_id)
        return asdict(info)

    return router
