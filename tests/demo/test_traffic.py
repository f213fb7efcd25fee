"""The demo's benign users against a gateway that is slow or refuses: counted, not fatal."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from stillroom.demo.traffic import User, run_users
from tests.helpers.serve import running


def stalling_gateway() -> FastAPI:
    """Answers the key `slow` after 2 s and refuses every other key at once (429)."""
    app = FastAPI()

    async def reply(request: Request) -> JSONResponse:
        if request.headers.get("authorization") == "Bearer slow":
            await asyncio.sleep(2.0)
        return JSONResponse({"error": {"message": "slow down"}}, status_code=429)

    app.post("/v1/chat/completions")(reply)
    app.post("/v1/completions")(reply)
    return app


def test_a_timed_out_request_is_counted_and_the_other_users_go_on() -> None:
    users = [
        User("stuck", "slow", "chat", 2, "192.0.2.1", "curl/8"),
        User("refused", "fast", "developer", 3, "192.0.2.2", "curl/8"),
    ]
    with running(stalling_gateway()) as url:
        statuses = asyncio.run(
            run_users(url, "m", users, ["lighthouse"], span_s=0.1, seed=0, timeout=0.3)
        )
    assert statuses == {"timeout": 2, "429": 3}
