"""Three real `stillroom serve` processes sharing one PostgreSQL gateway database and one
limits database (`--limits`): limits hold across replicas, and a block made through any
one of them reaches all within the key cache's lifetime."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import Engine

from stillroom.errors import APIError
from stillroom.serve.accounts import create_account
from stillroom.serve.db import open_db
from stillroom.serve.gateway import KEY_CACHE_S
from stillroom.serve.limits import Limiter
from stillroom.serve.shared_limits import (
    ConnectionPool,
    SharedLimiter,
    conninfo,
    create_limits_table,
)
from stillroom.testing.fake_openai import start_fake_server
from tests.helpers.replicas import CHAT, auth, burst, gateway_processes
from tests.helpers.serve import PG_URL_ENV, free_port, fresh_pg_database

ADMIN_TOKEN = "admin-secret-for-tests"
KEYLESS_RPM = 5
# A block must show on every replica within the key cache's lifetime; the slack covers the
# polling interval and a loaded machine's request latency.
PROPAGATION_SLACK_S = 0.5


@dataclass
class Replicas:
    roots: list[str]
    db: str
    engine: Engine


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    if not os.environ.get(PG_URL_ENV):
        pytest.skip(f"no PostgreSQL server named in {PG_URL_ENV} (.ci/run starts one)")
    db = fresh_pg_database()
    engine = open_db(db)  # migrated once here, not by three processes racing
    token_file = tmp_path_factory.mktemp("admin") / "token"
    token_file.write_text(ADMIN_TOKEN)
    flags = ["--limits", db, "--admin-token-file", str(token_file)]
    flags += ["--unauthenticated-rpm", str(KEYLESS_RPM)]
    with (
        start_fake_server() as upstream,
        gateway_processes(3, upstream.base_url, db, *flags) as roots,
    ):
        yield Replicas(roots, db, engine)
    engine.dispose()


def test_an_accounts_rpm_holds_across_three_replicas(replicas: Replicas) -> None:
    _, key = create_account(replicas.engine, "shared-rpm", rpm_limit=10)
    replies = asyncio.run(burst(replicas.roots, key.key, 40))
    assert Counter(r.status_code for r in replies) == {200: 10, 429: 30}
    refused = [r for r in replies if r.status_code == 429]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in refused)


def test_the_keyless_limit_per_address_holds_across_replicas(replicas: Replicas) -> None:
    replies = asyncio.run(burst(replicas.roots, None, 12))
    assert Counter(r.status_code for r in replies) == {401: KEYLESS_RPM, 429: 12 - KEYLESS_RPM}


async def _seconds_until_refused(root: str, key: str, since: float) -> float:
    async with httpx.AsyncClient(timeout=30) as client:
        while time.monotonic() - since < 10:
            reply = await client.post(f"{root}/v1/chat/completions", json=CHAT, headers=auth(key))
            if reply.status_code == 403:
                return time.monotonic() - since
            assert reply.status_code == 200, reply.text
            await asyncio.sleep(0.02)
    raise AssertionError(f"{root} still serves a blocked key after 10 s")


async def _propagation_s(roots: list[str], key: str, since: float) -> list[float]:
    return list(await asyncio.gather(*(_seconds_until_refused(r, key, since) for r in roots)))


def _warm(roots: list[str], key: str) -> None:
    """Every replica serves the key, so each holds it in its key cache when the block lands."""
    for root in roots:
        reply = httpx.post(f"{root}/v1/chat/completions", json=CHAT, headers=auth(key))
        assert reply.status_code == 200, reply.text


def test_a_block_through_one_replicas_admin_api_reaches_all(replicas: Replicas) -> None:
    _, key = create_account(replicas.engine, "blocked-by-admin", rpm_limit=1000)
    _warm(replicas.roots, key.key)
    blocked = httpx.post(
        f"{replicas.roots[0]}/admin/accounts/blocked-by-admin/block",
        json={"reason": "harvesting"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert blocked.status_code == 200, blocked.text
    # The replica that blocked forgets its cached key at once: its very next answer is 403,
    # with no wait for the key cache (a count, where a time bound failed on a loaded machine).
    first = httpx.post(f"{replicas.roots[0]}/v1/chat/completions", json=CHAT, headers=auth(key.key))
    assert first.status_code == 403, first.text
    seconds = asyncio.run(_propagation_s(replicas.roots, key.key, time.monotonic()))
    assert max(seconds) <= KEY_CACHE_S + PROPAGATION_SLACK_S, seconds


def test_a_block_from_the_shell_reaches_all_replicas(replicas: Replicas, tmp_path: Path) -> None:
    _, key = create_account(replicas.engine, "blocked-by-shell", rpm_limit=1000)
    _warm(replicas.roots, key.key)
    block = ["accounts", "block", "blocked-by-shell", "--db", replicas.db, "--reason", "x"]
    done = subprocess.run(
        [sys.executable, "-m", "stillroom", *block], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["blocked_at"] is not None
    seconds = asyncio.run(_propagation_s(replicas.roots, key.key, time.monotonic()))
    assert max(seconds) <= KEY_CACHE_S + PROPAGATION_SLACK_S, seconds


Admit = tuple[str, int | None, int | None, int]  # account, rpm, tpm, tokens
Settle = tuple[str, int, int]  # account, reserved, used


async def _answers(shared: SharedLimiter, memory: Limiter) -> list[tuple[float, float]]:
    """The same calls to both limiters; their waits, side by side."""
    steps: list[Admit | Settle] = [
        ("a", 3, 100, 40),
        ("a", 3, 100, 40),
        ("a", 3, 100, 40),  # tokens short: 20 left, 40 wanted
        ("a", 40, 10),  # settled: 30 given back
        ("a", 3, 100, 40),  # the last request of the minute
        ("a", 3, 100, 1),  # requests short
        ("b", None, 50, 500),  # bigger than the bucket: admitted when full, in debt
        ("b", None, 50, 10),
        ("c", None, None, 10**6),  # no limits at all
    ]
    waits = []
    for step in steps:
        if len(step) == 3:
            await shared.settle(*step)
            memory.settle(*step)
        else:
            waits.append((await shared.admit(*step), memory.admit(*step)))
    await shared.pool.aclose()
    return waits


def test_shared_buckets_answer_as_the_in_memory_ones(pg_database: str) -> None:
    shared = SharedLimiter(ConnectionPool(create_limits_table(pg_database)), "account", None, None)
    waits = asyncio.run(_answers(shared, Limiter(None, None)))
    assert [s > 0 for s, _ in waits] == [m > 0 for _, m in waits]
    assert [s > 0 for s, _ in waits] == [False, False, True, False, True, False, True, False]
    assert all(abs(s - m) < 0.5 for s, m in waits), waits  # 12 s, 20 s, 552 s


async def _race(info: str, replicas: int, requests: int) -> int:
    """`requests` admissions at once, dealt to limiters with a pool each, as replicas have."""
    pools = [ConnectionPool(info) for _ in range(replicas)]
    limiters = [SharedLimiter(p, "account", None, None) for p in pools]
    calls = [limiters[i % replicas].admit("raced", 25, None, 0) for i in range(requests)]
    waits = await asyncio.gather(*calls)
    for pool in pools:
        await pool.aclose()
    return sum(1 for w in waits if w == 0)


def test_concurrent_takes_never_spend_the_last_credit_twice(pg_database: str) -> None:
    info = create_limits_table(pg_database)
    create_limits_table(pg_database)  # a second replica starting: the table is there already
    assert asyncio.run(_race(info, replicas=3, requests=90)) == 25


def test_unreachable_shared_limits_refuse_with_503() -> None:
    """Fail closed: without its limits a gateway must not serve unlimited."""
    nowhere = ConnectionPool(f"postgresql://127.0.0.1:{free_port()}/none")
    with pytest.raises(APIError) as refused:
        asyncio.run(SharedLimiter(nowhere, "account", 10, None).admit("a", None, None, 0))
    assert refused.value.status == 503 and refused.value.code == "limits_unavailable"


DROP_OTHERS = """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()"""


async def _admit_across_a_drop(url: str) -> list[float]:
    limiter = SharedLimiter(ConnectionPool(create_limits_table(url)), "account", None, None)
    waits = [await limiter.admit("a", 5, None, 0)]
    with psycopg.connect(conninfo(url), autocommit=True) as admin:
        admin.execute(DROP_OTHERS)  # as a server restart or an idle timeout would
    waits.append(await limiter.admit("a", 5, None, 0))
    await limiter.pool.aclose()
    return waits


def test_a_pooled_connection_the_server_dropped_is_replaced(pg_database: str) -> None:
    assert asyncio.run(_admit_across_a_drop(pg_database)) == [0.0, 0.0]


def test_serve_refuses_a_limits_url_it_cannot_share(tmp_path: Path) -> None:
    args = ["serve", "--upstream", "http://127.0.0.1:9/v1", "--db", str(tmp_path / "g.sqlite")]
    for limits, says in [
        (str(tmp_path / "limits.sqlite"), "needs a postgresql:// URL"),
        (f"postgresql://127.0.0.1:{free_port()}/none", "cannot open the limits database"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "stillroom", *args, "--limits", limits],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2 and says in done.stderr, done.stderr
