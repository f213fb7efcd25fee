"""Gateway under a keyless flood: what 1,000 requests without a valid key cost the clients
that have one, the gateway's memory and its request log.

Every server a real process: the fake OpenAI server (50 ms per reply) as the upstream, and
`stillroom serve --upstream` on a SQLite log with its default limits (4 MB bodies,
60 keyless requests a minute per address). Two runs, side by side:
  1. Quiet: a few clients with valid keys, each sending requests back to back, for ~20 s;
     their latency p50/p99.
  2. Flood: the same clients while another process sends 1,000 requests with no key or a
     bad one from several concurrent senders: small JSON bodies, some with a 60 KB
     User-Agent, and five 200 MB bodies sent as chunked streams (never held in full by the
     sender). Recorded: the served clients' p50/p99 for requests sent while the flood was
     in flight, the gateway's peak RSS over its pre-flood RSS (/proc/<pid>/status VmRSS
     sampled every 50 ms, and VmHWM), the flood's status codes, and the log's growth on
     disk (the SQLite file and its -wal).

A keyless request is refused for its key before the app reads its body, so a big keyless
body is answered 401/429, not 413 (that is for callers with a valid key); the HTTP server
still reads the rest off the socket and drops it, to keep the connection open
(`big_bodies_mb_sent`: memory stays flat, the bytes still cost CPU).

    python benchmarks/serve_keyless_flood.py [--seconds 20] [--clients 4] [--flood 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.replicas import fake_upstream, gateway_popen  # noqa: E402

from stillroom.serve.accounts import create_account  # noqa: E402
from stillroom.serve.db import open_db  # noqa: E402

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
MEMORY_TARGET_MB = 50.0
P99_TARGET_RATIO = 2.0
CHUNK = 1024 * 1024


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


class RssSampler(threading.Thread):
    """The gateway's VmRSS every 50 ms, in a thread so the event loop's stalls don't skip
    samples."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = proc_kb(pid, "VmRSS")
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak_kb = max(self.peak_kb, proc_kb(self.pid, "VmRSS"))


def db_bytes(db: str) -> int:
    return sum(os.path.getsize(p) for p in (db, f"{db}-wal") if os.path.exists(p))


async def served(
    root: str, keys: list[str], stop: asyncio.Event, into: list[tuple[float, float, int]]
) -> None:
    """One closed-loop client per key until `stop`; (wall-clock start, ms, status) each."""
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(key: str) -> None:
            headers = {"Authorization": f"Bearer {key}"}
            while not stop.is_set():
                sent, t = time.time(), time.perf_counter()
                try:
                    reply = await client.post(
                        f"{root}/v1/chat/completions", json=CHAT, headers=headers
                    )
                    status = reply.status_code
                except httpx.TransportError:
                    status = 0
                into.append((sent, (time.perf_counter() - t) * 1e3, status))

        await asyncio.gather(*(one(k) for k in keys))


async def _big_body(megabytes: int, sent: list[int]) -> AsyncIterator[bytes]:
    # One buffer sent again and again: the sender holds 1 MB, not the whole body.
    chunk = b"x" * CHUNK
    for _ in range(megabytes):
        yield chunk
        sent[0] += CHUNK  # written (socket buffers included) before the gateway closed


async def _flood(root: str, args: dict[str, int]) -> dict[str, Any]:
    total, big = args["flood"], args["big"]
    big_at = {i * total // big + total // (2 * big) for i in range(big)}
    long_ua = "flood/" + "a" * (args["ua_kb"] * 1024)
    statuses: dict[str, int] = {}
    big_sent = [0]
    counter = iter(range(total))
    timeout = httpx.Timeout(60, connect=10)
    async with httpx.AsyncClient(timeout=timeout) as client:

        async def sender() -> None:
            for i in counter:
                headers = {"User-Agent": long_ua if i % 4 < 2 else "flood/1"}
                if i % 2:  # a key of the right shape that no account holds
                    headers["Authorization"] = f"Bearer sk-bad-{i:08d}"
                content: Any = json.dumps(CHAT).encode()
                if i in big_at:
                    # Short User-Agent: the body must get past header parsing to be tested.
                    headers["User-Agent"] = "flood/1"
                    content = _big_body(args["big_mb"], big_sent)
                headers["Content-Type"] = "application/json"
                try:
                    reply = await client.post(
                        f"{root}/v1/chat/completions", content=content, headers=headers
                    )
                    name = str(reply.status_code)
                except httpx.TransportError as e:
                    name = f"transport: {type(e).__name__}"
                if i in big_at:
                    name = f"{name} ({args['big_mb']} MB body)"
                statuses[name] = statuses.get(name, 0) + 1

        started = time.time()
        await asyncio.gather(*(sender() for _ in range(args["senders"])))
    ended = time.time()
    return {"started": started, "ended": ended, "statuses": statuses, "big_sent": big_sent[0]}


def flood_process(root: str, args: dict[str, int], out: Any) -> None:
    """The flood, in its own process so its senders take no CPU from the served clients'
    event loop."""
    out.put(asyncio.run(_flood(root, args)))


def _latency(rows: list[tuple[float, float, int]]) -> dict[str, Any]:
    ms = [r[1] for r in rows if r[2] == 200]
    return {
        "requests": len(rows),
        "failed": sum(r[2] != 200 for r in rows),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


async def quiet_run(root: str, keys: list[str], seconds: float) -> dict[str, Any]:
    stop, rows = asyncio.Event(), []
    clients = asyncio.create_task(served(root, keys, stop, rows))
    await asyncio.sleep(seconds)
    stop.set()
    await clients
    return _latency(rows)


async def flood_run(
    root: str, pid: int, db: str, keys: list[str], cli: argparse.Namespace
) -> dict[str, Any]:
    stop, rows = asyncio.Event(), []
    began = time.monotonic()
    clients = asyncio.create_task(served(root, keys, stop, rows))
    await asyncio.sleep(2)  # the clients in their stride before the flood starts
    rss_before, hwm_before, log_before = proc_kb(pid, "VmRSS"), proc_kb(pid, "VmHWM"), db_bytes(db)
    sampler = RssSampler(pid)
    sampler.start()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    flood_args = {k: getattr(cli, k) for k in ("flood", "big", "big_mb", "ua_kb", "senders")}
    flooder = ctx.Process(target=flood_process, args=(root, flood_args, out))
    flooder.start()
    flood = await asyncio.to_thread(out.get)
    flooder.join()
    # The clients run on to the quiet run's length, so both runs see as many requests.
    await asyncio.sleep(max(1.0, cli.seconds - (time.monotonic() - began)))
    stop.set()
    await clients
    await asyncio.sleep(1)  # the last refusals' log rows committed
    sampler.stop.set()
    sampler.join()
    hwm_after = proc_kb(pid, "VmHWM")
    # VmHWM catches a peak between two samples, but only when it rose during the flood.
    peak_kb = max(sampler.peak_kb, hwm_after if hwm_after > hwm_before else 0)
    during = [r for r in rows if flood["started"] <= r[0] <= flood["ended"]]
    statuses: dict[str, int] = flood["statuses"]
    by_code = {
        code: sum(n for name, n in statuses.items() if name.split()[0] == code)
        for code in ("401", "413", "429")
    }
    return {
        "flood_seconds": round(flood["ended"] - flood["started"], 2),
        "flood_statuses": statuses,
        "big_bodies_mb_sent": round(flood["big_sent"] / CHUNK, 1),
        "flood_401": by_code["401"],
        "flood_429": by_code["429"],
        "served_during_flood": _latency(during),
        "served_whole_run": _latency(rows),
        "rss_pre_flood_mb": round(rss_before / 1024, 1),
        "rss_peak_mb": round(peak_kb / 1024, 1),
        "vmhwm_before_mb": round(hwm_before / 1024, 1),
        "vmhwm_after_mb": round(hwm_after / 1024, 1),
        "rss_growth_mb": round((peak_kb - rss_before) / 1024, 1),
        "log_db_growth_bytes": db_bytes(db) - log_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--flood", type=int, default=1000, help="keyless/bad-key requests")
    parser.add_argument("--senders", type=int, default=8, help="concurrent flood senders")
    parser.add_argument("--big", type=int, default=5, help="bodies of --big-mb among them")
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--ua-kb", type=int, default=60, help="long User-Agent, on half")
    cli = parser.parse_args()
    db = str(Path(tempfile.mkdtemp()) / "gateway.sqlite")
    engine = open_db(db)
    keys = [
        create_account(engine, f"client-{i}", rpm_limit=10**7, tpm_limit=10**9)[1].key
        for i in range(cli.clients)
    ]
    engine.dispose()
    result: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count()}
    with fake_upstream(0.05) as upstream, gateway_popen(upstream, db) as (root, proc):
        asyncio.run(quiet_run(root, keys, 2))  # warm-up: connections, key caches
        result["quiet"] = asyncio.run(quiet_run(root, keys, cli.seconds))
        result["flood"] = asyncio.run(flood_run(root, proc.pid, db, keys, cli))
    quiet_p99 = result["quiet"]["p99_ms"]
    flood_p99 = result["flood"]["served_during_flood"]["p99_ms"]
    result["p99_ratio_flood_over_quiet"] = round(flood_p99 / quiet_p99, 2)
    result["targets"] = {
        "rss_growth_mb_max": MEMORY_TARGET_MB,
        "p99_ratio_max": P99_TARGET_RATIO,
    }
    result["ok"] = {
        "memory": result["flood"]["rss_growth_mb"] <= MEMORY_TARGET_MB,
        "p99": result["p99_ratio_flood_over_quiet"] <= P99_TARGET_RATIO,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
