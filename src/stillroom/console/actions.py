"""The console's POST routes: what a reviewer does to a case. Each needs a session, the
reviewer role or higher, and the session's CSRF token in the form; each writes the trail."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import FastAPI, Path, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.engine import Engine

from stillroom.console import auth
from stillroom.console import cases as C
from stillroom.console.store import ConsoleError

CaseId = Annotated[int, Path(ge=1, le=2**31 - 1)]
VERBS = ("block", "unblock", "dismiss", "note", "review", "reopen", "revoke")


def add_routes(app: FastAPI, engine: Engine) -> None:
    @app.post("/cases/{case_id}/{verb}")
    async def act(request: Request, case_id: CaseId, verb: str) -> Response:
        session = await auth.current(engine, request)
        form = await auth.read_form(request, session.csrf)
        if verb not in VERBS:
            raise ConsoleError(
                f"no action {verb!r}; the case page's buttons are {', '.join(VERBS)}", 404
            )
        auth.require(session, "reviewer", f"{verb} a case")
        who = session.reviewer
        if verb in ("block", "unblock"):
            reason = auth.text_field(form, "reason")
            policy = form.get("policy") if verb == "block" else None
            await asyncio.to_thread(C.block, engine, who, case_id, verb == "block", reason, policy)
        elif verb == "revoke":
            reason = auth.text_field(form, "reason")
            key_id = auth.text_field(form, "key_id", limit=60)
            await asyncio.to_thread(C.revoke_key, engine, who, case_id, key_id, reason)
        elif verb == "dismiss":
            reason = auth.text_field(form, "reason")
            await asyncio.to_thread(C.dismiss, engine, who, case_id, reason)
        else:
            reason = auth.text_field(form, "reason", needed=verb == "note")
            await asyncio.to_thread(C.set_status, engine, who, case_id, verb, reason)
        return RedirectResponse(f"/cases/{case_id}", status_code=303)
