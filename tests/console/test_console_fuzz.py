"""schemathesis over the console's JSON routes, logged in and not: no input gives a 5xx,
and every refusal is the console's JSON error naming what was wrong."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from sqlalchemy.engine import Engine

from stillroom.console.app import create_console_app
from stillroom.console.auth import COOKIE
from tests.console.conftest import logged_in
from tests.helpers.serve import running

pytestmark = pytest.mark.integration


def test_no_input_makes_the_json_routes_fail(engine: Engine) -> None:
    cookie = logged_in(engine, "viewer").client.cookies.get(COOKIE)
    app = create_console_app(engine)
    schema = schemathesis.openapi.from_dict(app.openapi())
    checked = 0
    with running(app) as url:
        base = url.removesuffix("/v1")
        for result in schema.get_all_operations():
            operation = result.ok()
            if not (operation.path.startswith("/api/") or operation.path == "/trail.jsonl"):
                continue

            @given(case=operation.as_strategy())
            @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
            def call(case: Any) -> None:
                generated = dict(case.headers or {})
                for sent in ({"Cookie": f"{COOKIE}={cookie}"}, {}):
                    case.headers = {**generated, **sent}
                    response = case.call(base_url=base)
                    assert response.status_code < 500, (case.path, case.query, response.text)
                    if response.status_code >= 400:
                        assert response.json()["error"]["message"]
                    if not sent:
                        assert response.status_code in (401, 422), response.text

            call()
            checked += 1
    # /api/cases, /api/cases/{id}, its trail, /api/accounts/{id}, /trail.jsonl
    assert checked == 5
