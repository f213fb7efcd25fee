"""Fixtures of the console tests: a real gateway database built once per module (simulated
traffic, accounts, keys, a stored audit run), copied for each test that changes it, and a
client that logs in through the real login form."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from stillroom.console import store
from stillroom.console.app import create_console_app
from stillroom.console.auth import ConsoleSettings
from stillroom.serve.db import open_db
from tests.console.build import build_gateway, copy_sqlite

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="package")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_gateway(tmp_path_factory.mktemp("console-gateway"))


@pytest.fixture
def engine(built: dict[str, Any], tmp_path: Path) -> Iterator[Engine]:
    e = open_db(copy_sqlite(built["db"], tmp_path / "gateway.sqlite"))
    yield e
    e.dispose()


class Visitor:
    """A browser-like client: cookies kept, forms sent with the page's CSRF token."""

    def __init__(self, engine: Engine, settings: ConsoleSettings | None = None) -> None:
        self.client = TestClient(create_console_app(engine, settings))
        self.seen: list[str] = []  # every URL, body and header received, for the leak checks

    def get(self, url: str, **kw: Any) -> Any:
        r = self.client.get(url, **kw)
        self._keep(url, r)
        return r

    def post(self, url: str, data: dict[str, str], **kw: Any) -> Any:
        r = self.client.post(url, data=data, follow_redirects=False, **kw)
        self._keep(url, r)
        return r

    def _keep(self, url: str, r: Any) -> None:
        self.seen += [
            url,
            str(r.url),
            r.text,
            *(f"{k}: {v}" for k, v in r.headers.items() if k.lower() != "set-cookie"),
        ]

    def csrf(self, url: str = "/") -> str:
        found = CSRF.search(self.get(url).text)
        assert found, f"no form with a CSRF token on {url}"
        return found.group(1)

    def login(self, token: str) -> Any:
        return self.post("/login", {"csrf": self.csrf("/login"), "token": token})


def reviewer(engine: Engine, role: str, name: str | None = None) -> str:
    return store.add_reviewer(engine, name or f"{role}-one", role)[1]


def logged_in(
    engine: Engine, role: str, settings: ConsoleSettings | None = None, name: str | None = None
) -> Visitor:
    v = Visitor(engine, settings)
    r = v.login(reviewer(engine, role, name))
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return v
