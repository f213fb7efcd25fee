"""Gateway under load, against a tiny local model (a real model, just small).

Three measurements, same run, each server in its own process:
  1. 64 concurrent clients send >= 5,000 requests through `stillroom serve`; afterwards the
     log must hold exactly one row per answered request (no loss, no duplicates).
  2. Gateway overhead: the same load against a bare server that calls the same backend with
     no auth, limits or log (the baseline). Reported at saturation (the closed loop above)
     and at a fixed offered load of half the bare server's throughput (open loop, Poisson
     arrivals dealt to the two servers in turn), where three figures are given, each with
     the gateway's minus the bare server's and a bootstrap 95% interval:
       - client-side latency, end to end;
       - client-side latency outside the backend call (latency minus the server's own
         timing of its backend call, from its Server-Timing header): HTTP, framework and,
         in the gateway, auth, limits, validation, the log commit and the reply. The
         backend's batching wait, which dominates end-to-end tails and differs by chance
         from request to request, drops out;
       - the gateway's own time per request, as it measures it (Server-Timing).
     Both servers run the model as `stillroom serve` does: in a child process
     (--in-process: in the server's own).
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

from tests.helpers.tiny_models import make_tiny_lm  # noqa: E402

MAX_TOKENS = 8

BARE_SERVER = """
import os, sys, time, uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from stillroom.serve.backends import LocalBackend
from stillroom.serve.replies import completion_body
from stillroom.serve.schemas import CompletionRequest
from stillroom.teachers.local import LocalTeacher
from stillroom.teachers.process import ProcessTeacher

if __name__ == "__main__":  # spawn's child (the model process) must not run the server
    in_process = sys.argv[3] == "in-process"
    if in_process:
        teacher = LocalTeacher.load(sys.argv[1], batch_size=16)
    else:  # as `stillroom serve` runs it: all cores but one for the model
        teacher = ProcessTeacher(sys.argv[1], batch_size=16, threads=max(1, os.cpu_count() - 1))
    backend = LocalBackend(teacher, default_max_tokens=8, max_tokens_limit=64)
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> JSONResponse:
        called = time.perf_counter()  # timed as the gateway times its backend call
        answer = await backend.completion(body)
        backend_ms = (time.perf_counter() - called) * 1e3
        return JSONResponse(
            completion_body(answer, "cmpl-bare", 0),
            headers={"Server-Timing": f"backend;dur={backend_ms:.3f}"},
        )

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False)
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


async def paced(
    urls: list[str], keys: list[str], model: str, total: int, rate: float, seed: int
) -> list[dict[str, Any]]:
    """Open loop: `total` requests arriving as a Poisson process at `rate` per second, each
    sent when due whatever the servers' state (unlike `load`'s closed loop of clients), and
    dealt to `urls` in turn. Interleaved request by request, the servers share every stall
    of the machine alike, which separate runs do not: one 100 ms stall in one server's run
    moves that run's p99 by more than the effect measured."""
    gaps = np.random.default_rng(seed).exponential(1 / rate, total)
    results: list[dict[str, Any]] = [
        # outside: client-side latency minus the server's backend call (its Server-Timing)
        {"latencies": [], "overheads": [], "outside": [], "failed": 0}
        for _ in urls
    ]
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(i: int) -> None:
            url, into = urls[i % len(urls)], results[i % len(urls)]
            body = {"model": model, "prompt": f"paced {seed} {i}", "max_tokens": MAX_TOKENS}
            headers = {"Authorization": f"Bearer {keys[i % len(keys)]}"}
            t = time.perf_counter()
            try:
                reply = await client.post(f"{url}/v1/completions", json=body, headers=headers)
            except httpx.TransportError:
                into["failed"] += 1
                return
            latency = (time.perf_counter() - t) * 1e3
            into["latencies"].append(latency)
            if reply.status_code != 200:
                into["failed"] += 1
                return
            timing = reply.headers.get("server-timing", "")
            if "gateway;dur=" in timing:
                into["overheads"].append(float(timing.split("gateway;dur=")[1].split(",")[0]))
            if "backend;dur=" in timing:
                backend = float(timing.split("backend;dur=")[1].split(",")[0])
                into["outside"].append(latency - backend)

        tasks = []
        start_t = time.perf_counter()
        due = 0.0
        for i, gap in enumerate(gaps):
            due += gap
            delay = start_t + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return results


def difference_ci(a: list[float], b: list[float], q: float, rounds: int = 2000) -> list[float]:
    """Bootstrap 95% interval of percentile q of `a` minus that of `b`: how far the
    difference of two tails could move by chance alone."""
    rng = np.random.default_rng(0)
    xa, xb = np.asarray(a), np.asarray(b)
    diffs = [
        np.percentile(rng.choice(xa, xa.size), q) - np.percentile(rng.choice(xb, xb.size), q)
        for _ in range(rounds)
    ]
    return [round(float(v), 2) for v in np.percentile(diffs, [2.5, 97.5])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--batching-requests", type=int, default=400)
    ap.add_argument("--paced-requests", type=int, default=5000, help="per server")
    ap.add_argument(
        "--paced-load",
        type=float,
        default=0.5,
        help="offered load of the paced phase, as a fraction of the bare server's throughput",
    )
    ap.add_argument("--raw", help="also write the paced phase's per-request figures here (JSON)")
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="run the model in the server's process (both servers), as before the default "
        "moved it to a child process",
    )
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
                "--no-model-process" if args.in_process else "--model-process",
            ],
            gw_port,
        )
        where = "in-process" if args.in_process else "model-process"
        bare_cmd = [sys.executable, "-c", BARE_SERVER, str(model_dir), str(bare_port), where]
        bare = start(bare_cmd, bare_port)
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
            # Fixed offered load below saturation, the requests dealt to the two servers in
            # turn: the latency a request pays for going through the gateway rather than to
            # the backend directly.
            rate = args.paced_load * statistics.mean([b1["req_per_s"], b2["req_per_s"]])
            paced_gw, paced_bare = asyncio.run(
                paced([gw_url, bare_url], keys, model, 2 * args.paced_requests, rate, seed=0)
            )
            paced_failed = paced_gw["failed"] + paced_bare["failed"]
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

    def ms(values: list[float]) -> dict[str, float]:
        return {
            "p50": round(float(np.percentile(values, 50)), 2),
            "p99": round(float(np.percentile(values, 99)), 2),
        }

    def gateway_minus_bare(field: str) -> dict[str, dict[str, Any]]:
        """p50 and p99 of the gateway's `field` minus the bare server's, with intervals."""
        a, b = paced_gw[field], paced_bare[field]
        return {
            "difference": {k: round(ms(a)[k] - ms(b)[k], 2) for k in ("p50", "p99")},
            "difference_95ci": {k: difference_ci(a, b, q) for k, q in (("p50", 50), ("p99", 99))},
        }

    end_to_end = gateway_minus_bare("latencies")
    gw_lat, bare_lat = pct(g1, g2), pct(b1, b2)
    result = {
        "benchmark": "serve_load",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": "tiny Gemma 3 (2 layers, random weights)",
        "model_runs": "in the server's process" if args.in_process else "in a child process",
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
        "paced": {
            "offered_req_per_s": round(rate, 1),
            "requests_each": len(paced_gw["latencies"]),
            "failed": paced_failed,
            "gateway_latency_ms": ms(paced_gw["latencies"]),
            "bare_latency_ms": ms(paced_bare["latencies"]),
            "overhead_ms": end_to_end["difference"],
            "overhead_ms_95ci": end_to_end["difference_95ci"],
            "in_gateway_overhead_ms": ms(paced_gw["overheads"]),
            "outside_backend_ms": {
                "gateway": ms(paced_gw["outside"]),
                "bare": ms(paced_bare["outside"]),
                **gateway_minus_bare("outside"),
            },
        },
        "microbatching": {
            "sequential_req_per_s": seq["req_per_s"],
            "concurrency_16_req_per_s": conc["req_per_s"],
            "speedup": round(conc["req_per_s"] / seq["req_per_s"], 2),
        },
    }
    if args.raw:
        Path(args.raw).write_text(json.dumps({"gateway": paced_gw, "bare": paced_bare}))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
