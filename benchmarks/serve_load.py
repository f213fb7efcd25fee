"""Gateway under load, against a tiny local model (a real model, just small).

Three measurements, same run, each server in its own process:
  1. 64 concurrent clients send >= 5,000 requests through `stillroom serve`; afterwards the
     log must hold exactly one row per answered request (no loss, no duplicates).
  2. Gateway overhead: the same load against a bare server that calls the same backend with
     no auth, limits or log (the baseline). Reported two ways: client-side latency
     percentiles of both servers, and the gateway's own per-request overhead from its log
     (its Server-Timing header: auth, limits, validation, the log commit, the reply).
  3. Micro-batching: throughput through the gateway at concurrency 16 vs 1 (sequential).

    python benchmarks/serve_load.py [--requests 5000] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.tiny_models import make_tiny_lm  # noqa: E402

MAX_TOKENS = 8

BARE_SERVER = """
import sys, uvicorn
from fastapi import FastAPI
from stillroom.serve.backends import LocalBackend
from stillroom.serve.replies import completion_body
from stillroom.serve.schemas import CompletionRequest
from stillroom.teachers.local import LocalTeacher

backend = LocalBackend(LocalTeacher.load(sys.argv[1], batch_size=16), default_max_tokens=8,
                       max_tokens_limit=64)
app = FastAPI()

@app.post("/v1/completions")
async def completions(body: CompletionRequest) -> dict:
    return completion_body(await backend.completion(body), "cmpl-bare", 0)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {' '.join(cmd)}") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


async def load(url: str, keys: list[str], model: str, total: int, clients: int) -> dict[str, Any]:
    """`clients` workers share `total` requests; each request a distinct prompt."""
    latencies: list[float] = []
    overheads: list[float] = []  # the gateway's own time per request (Server-Timing)
    statuses: dict[int | str, int] = {}
    ids: list[str] = []
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker(w: int) -> None:
            headers = {"Authorization": f"Bearer {keys[w % len(keys)]}"}
            for i in counter:
                body = {
                    "model": model,
                    "prompt": f"request {i} from client {w}",
                    "max_tokens": MAX_TOKENS,
                    "temperature": 1.0,
                }
                t = time.perf_counter()
                try:
                    reply = await client.post(f"{url}/v1/completions", json=body, headers=headers)
                except httpx.TransportError as e:
                    # A dropped connection is a finding, not a crash: it is counted, and the
                    # log check below shows whether the server logged a reply it never sent.
                    name = f"transport: {type(e).__name__}"
                    statuses[name] = statuses.get(name, 0) + 1
                    continue
                latencies.append((time.perf_counter() - t) * 1e3)
                statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
                if reply.status_code == 200:
                    ids.append(reply.json()["id"])
                    timing = reply.headers.get("server-timing", "")
                    if "gateway;dur=" in timing:
                        overheads.append(float(timing.split("gateway;dur=")[1].split(",")[0]))

        start_t = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        elapsed = time.perf_counter() - start_t
    lat = np.array(latencies)
    return {
        "requests": total,
        "clients": clients,
        "statuses": statuses,
        "ids": ids,
        "overheads": overheads,
        "req_per_s": round(total / elapsed, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 2),
            "p99": round(float(np.percentile(lat, 99)), 2),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--batching-requests", type=int, default=400)
    args = ap.parse_args()
    from stillroom.serve.accounts import create_account
    from stillroom.serve.db import open_db, requests

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_lm(Path(tmp) / "tiny")
        db = str(Path(tmp) / "gateway.sqlite")
        engine = open_db(db)
        keys = [create_account(engine, f"client-{i}")[1].key for i in range(8)]
        gw_port, bare_port = free_port(), free_port()
        exe = str(Path(sys.executable).parent / "stillroom")
        gateway = start(
            [
                exe,
                "serve",
                "--model",
                str(model_dir),
                "--db",
                db,
                "--port",
                str(gw_port),
                "--max-tokens",
                str(MAX_TOKENS),
            ],
            gw_port,
        )
        bare = start([sys.executable, "-c", BARE_SERVER, str(model_dir), str(bare_port)], bare_port)
        try:
            model = httpx.get(f"http://127.0.0.1:{gw_port}/health").json()["model"]
            gw_url, bare_url = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{bare_port}"
            # Warm both up, then alternate halves so drift hits both alike.
            asyncio.run(load(gw_url, keys, model, 200, args.clients))
            asyncio.run(load(bare_url, keys, model, 200, args.clients))
            with engine.begin() as conn:
                conn.execute(requests.delete())
            half = args.requests // 2
            g1 = asyncio.run(load(gw_url, keys, model, half, args.clients))
            b1 = asyncio.run(load(bare_url, keys, model, half, args.clients))
            g2 = asyncio.run(load(gw_url, keys, model, args.requests - half, args.clients))
            b2 = asyncio.run(load(bare_url, keys, model, args.requests - half, args.clients))
            time.sleep(0.5)
            with engine.connect() as conn:
                rows = conn.execute(sa.select(requests.c.id)).all()
            answered = g1["ids"] + g2["ids"]
            row_ids = [r.id for r in rows]
            overhead = np.array(g1["overheads"] + g2["overheads"])
            seq = asyncio.run(load(gw_url, keys, model, args.batching_requests // 4, 1))
            conc = asyncio.run(load(gw_url, keys, model, args.batching_requests, 16))
        finally:
            for proc in (gateway, bare):
                proc.terminate()
                proc.wait()

    def pct(*runs: dict[str, Any]) -> dict[str, float]:
        return {
            k: round(statistics.mean(r["latency_ms"][k] for r in runs), 2) for k in ("p50", "p99")
        }

    gw_lat, bare_lat = pct(g1, g2), pct(b1, b2)
    result = {
        "benchmark": "serve_load",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": "tiny Gemma 3 (2 layers, random weights)",
        "clients": args.clients,
        "requests_through_gateway": len(answered),
        "statuses": {
            str(k): g1["statuses"].get(k, 0) + g2["statuses"].get(k, 0)
            for k in set(g1["statuses"]) | set(g2["statuses"])
        },
        "log_rows": len(row_ids),
        "log_rows_missing": len(set(answered) - set(row_ids)),
        "log_rows_duplicated": len(row_ids) - len(set(row_ids)),
        "log_rows_unanswered": len(set(row_ids) - set(answered)),
        "log_rows_lost_or_duplicated": len(set(answered) - set(row_ids))
        + len(row_ids)
        - len(set(row_ids)),
        "gateway_latency_ms": gw_lat,
        "baseline_bare_server_latency_ms": bare_lat,
        "client_side_p99_difference_ms": round(gw_lat["p99"] - bare_lat["p99"], 2),
        "gateway_req_per_s": round(statistics.mean([g1["req_per_s"], g2["req_per_s"]]), 1),
        "baseline_bare_req_per_s": round(statistics.mean([b1["req_per_s"], b2["req_per_s"]]), 1),
        "in_gateway_overhead_ms": {
            "p50": round(float(np.percentile(overhead, 50)), 2),
            "p99": round(float(np.percentile(overhead, 99)), 2),
        },
        "microbatching": {
            "sequential_req_per_s": seq["req_per_s"],
            "concurrency_16_req_per_s": conc["req_per_s"],
            "speedup": round(conc["req_per_s"] / seq["req_per_s"], 2),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
