"""schemathesis against the gateway's served OpenAPI schema: no input may produce a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from stillroom.serve.accounts import create_account
from stillroom.serve.app import create_app
from stillroom.serve.backends import LocalBackend
from stillroom.serve.db import open_db
from stillroom.serve.gateway import ServeSettings
from stillroom.teachers.local import LocalTeacher
from tests.helpers.serve import running
from tests.helpers.tiny_models import make_tiny_lm

pytestmark = pytest.mark.integration

ADMIN = "fuzz-admin-token"
_auth: dict[str, str] = {}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    teacher = LocalTeacher.load(str(make_tiny_lm(tmp / "lm")), batch_size=8)
    engine = open_db(str(tmp / "gateway.sqlite"))
    _auth["key"] = create_account(engine, "fuzzer")[1].key
    backend = LocalBackend(teacher, default_max_tokens=4, max_tokens_limit=8)
    app = create_app(
        engine, backend, ServeSettings(admin_token=ADMIN, default_max_tokens=4, api_docs=True)
    )
    with running(app) as url:
        yield schemathesis.openapi.from_url(url.removesuffix("/v1") + "/openapi.json")


def test_no_input_makes_the_gateway_fail(served: Any) -> None:
    checked = 0
    for result in served.get_all_operations():
        operation = result.ok()
        # Admin paths are fuzzed as the admin, the rest as a client: both surfaces.
        _auth["now"] = ADMIN if operation.path.startswith("/admin") else _auth["key"]

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {_auth['now']}"}
            response = case.call()
            assert response.status_code < 500, (case.path, case.body, response.text[:300])
            if response.status_code >= 400 and case.path.startswith("/v1"):
                error = response.json()["error"]
                assert error["message"] and error["type"]

        call()
        checked += 1
    assert checked >= 9  # every endpoint of the schema was fuzzed
