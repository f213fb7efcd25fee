"""Gateway replicas sharing rate limits (`stillroom serve --limits URL`) on PostgreSQL.

Three measurements, every server a real process, in front of the fake OpenAI server (its own
process, no latency), one PostgreSQL database holding accounts, keys, the log and the limits:
  1. Shared rpm: an account with rpm = 10, 40 concurrent requests dealt round-robin to three
     replicas; how many were admitted (10 with shared limits; 30 without, which is also
     measured, on three replicas without --limits).
  2. Block propagation: a block made through one replica's admin API, then through
     `stillroom accounts block`; seconds until every replica refuses the key (max over the
     replicas), each repeated; bounded by the key cache's lifetime (1 s).
  3. Overhead of --limits: two gateways on the same database and upstream, one with --limits
     and one without, sent the same load in interleaved rounds; the gateway's own time per
     request (its Server-Timing header: auth, limits, checks, log commit, reply) at p50/p99.

    python benchmarks/serve_replicas.py [--rounds 20] [--per-round 50] [--clients 4]

Needs a PostgreSQL server: STILLROOM_TEST_PG_URL, else scripts/start-test-postgres starts one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.replicas import (  # noqa: E402
    CHAT,
    auth,
    burst,
    fake_upstream,
    gateway_process,
    gateway_processes,
)
from tests.helpers.serve import PG_URL_ENV, fresh_pg_database  # noqa: E402

from stillroom.serve.accounts import create_account  # noqa: E402
from stillroom.serve.db import open_db  # noqa: E402

ADMIN_TOKEN = "bench-admin-token"


def admitted_of_40(roots: list[str], engine: Engine, name: str) -> int:
    _, key = create_account(engine, name, rpm_limit=10)
    return [r.status_code for r in asyncio.run(burst(roots, key.key, 40))].count(200)


async def _until_refused(client: httpx.AsyncClient, root: str, key: str, since: float) -> float:
    while True:
        reply = await client.post(f"{root}/v1/chat/completions", json=CHAT, headers=auth(key))
        if reply.status_code == 403:
            return time.monotonic() - since
        await asyncio.sleep(0.01)


async def _propagation_s(roots: list[str], key: str, since: float) -> float:
    async with httpx.AsyncClient(timeout=30) as client:
        return max(await asyncio.gather(*(_until_refused(client, r, key, since) for r in roots)))


def block_propagation_s(
    roots: list[str], engine: Engine, db: str, name: str, via_shell: bool
) -> float:
    """Seconds from the block's commit (its command's return) until all replicas refuse."""
    _, key = create_account(engine, name, rpm_limit=100_000)
    for root in roots:  # every replica holds the key in its cache when the block lands
        httpx.post(f"{root}/v1/chat/completions", json=CHAT, headers=auth(key.key))
    if via_shell:
        block = ["accounts", "block", name, "--db", db]
        subprocess.run([sys.executable, "-m", "stillroom", *block], check=True, capture_output=True)
    else:
        url = f"{roots[0]}/admin/accounts/{name}/block"
        httpx.post(url, headers=auth(ADMIN_TOKEN)).raise_for_status()
    return asyncio.run(_propagation_s(roots, key.key, time.monotonic()))


async def _round(root: str, key: str, n: int, clients: int) -> list[float]:
    """`n` requests from `clients` concurrent clients; the gateway's ms of each."""
    spent: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:

        async def one_client(count: int) -> None:
            for _ in range(count):
                reply = await client.post(
                    f"{root}/v1/chat/completions", json=CHAT, headers=auth(key)
                )
                reply.raise_for_status()
                timing = reply.headers["Server-Timing"]
                spent.append(float(timing.rsplit("gateway;dur=", 1)[1]))

        await asyncio.gather(*(one_client(n // clients) for _ in range(clients)))
    return spent


def overhead(roots: dict[str, str], engine: Engine, args: argparse.Namespace) -> dict[str, Any]:
    _, key = create_account(engine, "overhead", rpm_limit=10**7, tpm_limit=10**9)
    spent: dict[str, list[float]] = {name: [] for name in roots}
    for root in roots.values():  # warm-up: connections, key caches, first buckets
        asyncio.run(_round(root, key.key, args.clients * 5, args.clients))
    for r in range(args.rounds):
        order = list(roots) if r % 2 == 0 else list(reversed(roots))  # neither always first
        for name in order:
            spent[name] += asyncio.run(_round(roots[name], key.key, args.per_round, args.clients))
    stats: dict[str, Any] = {
        name: {"requests": len(ms), "p50_ms": _q(ms, 0.5), "p99_ms": _q(ms, 0.99)}
        for name, ms in spent.items()
    }
    stats["p99_added_by_limits_ms"] = round(
        stats["with_limits"]["p99_ms"] - stats["without_limits"]["p99_ms"], 3
    )
    stats["p50_added_by_limits_ms"] = round(
        stats["with_limits"]["p50_ms"] - stats["without_limits"]["p50_ms"], 3
    )
    return stats


def _q(values: list[float], q: float) -> float:
    return round(float(np.quantile(values, q)), 3)


def pg_server() -> str:
    if not os.environ.get(PG_URL_ENV):
        started = subprocess.run(
            [str(ROOT / "scripts/start-test-postgres")], capture_output=True, text=True, check=True
        )
        os.environ[PG_URL_ENV] = started.stdout.strip().splitlines()[-1]
    return os.environ[PG_URL_ENV]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="block propagation repeats")
    args = parser.parse_args()
    pg_server()
    db = fresh_pg_database()
    engine = open_db(db)  # migrated once here, not by the replicas racing
    token = Path(tempfile.mkdtemp()) / "admin-token"
    token.write_text(ADMIN_TOKEN)
    shared = ["--limits", db, "--admin-token-file", str(token)]
    result: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count()}
    with fake_upstream() as upstream:
        with gateway_processes(3, upstream, db, *shared) as roots:
            result["admitted_of_40_rpm10_shared"] = admitted_of_40(roots, engine, "rpm10-shared")
            result["block_propagation_s"] = {
                via: _propagation_summary(roots, engine, db, via, args.repeats)
                for via in ("admin_api", "shell")
            }
        with gateway_processes(3, upstream, db) as roots:
            result["admitted_of_40_rpm10_per_process"] = admitted_of_40(
                roots, engine, "rpm10-local"
            )
        with (
            gateway_process(upstream, db, *shared) as with_limits,
            gateway_process(upstream, db) as without,
        ):
            result["overhead"] = overhead(
                {"with_limits": with_limits, "without_limits": without}, engine, args
            )
    engine.dispose()
    print(json.dumps(result, indent=2))


def _propagation_summary(
    roots: list[str], engine: Engine, db: str, via: str, repeats: int
) -> dict[str, float]:
    seconds = [
        block_propagation_s(roots, engine, db, f"{via}-{i}", via == "shell") for i in range(repeats)
    ]
    return {"max": round(max(seconds), 3), "median": round(float(np.median(seconds)), 3)}


if __name__ == "__main__":
    main()
