"""Console speed on a large SQLite gateway database: the case queue and the case page.

The database: 10,000 accounts and 2,000,000 request-log rows over 7 days (accounts' volumes
drawn from a heavy-tailed distribution, so a few accounts hold most rows, as on a real
gateway), and one stored audit run with 500 flagged units: mostly single accounts, some
actors of 2-40 accounts, flagged units taken from the heaviest accounts (harvesters are heavy
users). The run is written straight into the audit-run tables (runs_store), as an audit on
this log would write it; the audit itself is not what is measured here.

The console runs as its own process (`stillroom console`, uvicorn); one client logs in and
asks, one request at a time, for:
  queue          /            no filter, then status / severity / account-search filters
  case           /cases/ID    a random case's page (HTML: evidence, accounts, prompts, trail)
  case_json      /api/cases/ID
  pictures       /cases/ID/features.png and timeline.png, first (drawn) and again (kept)
  health         /health      the floor: a request that reads nothing
Each is reported as p50 / p95 / max in ms, beside the target (queue and case page p95
<= 300 ms).

    python benchmarks/console_speed.py [--work DIR] [--rows 2000000] [--accounts 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

DAY = 86400.0
START = 1_780_000_000.0


def build(path: Path, accounts: int, rows: int, cases: int, seed: int) -> None:
    """The gateway database at `path`, unless one of this shape is there already."""
    from stillroom.console.store import create_tables
    from stillroom.serve.db import open_db

    engine = open_db(str(path))
    create_tables(engine)
    engine.dispose()
    db = sqlite3.connect(path)
    if db.execute("SELECT count(*) FROM requests").fetchone()[0] == rows:
        db.close()
        return
    g = np.random.default_rng(seed)
    ids = [f"acct_{i:016x}" for i in range(accounts)]
    db.executemany(
        "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)",
        [(a, f"customer-{i}", START - 30 * DAY) for i, a in enumerate(ids)],
    )
    weight = g.pareto(1.2, accounts) + 0.05
    weight /= weight.sum()
    _requests(db, g, ids, weight, rows)
    heavy = [ids[i] for i in np.argsort(-weight)]
    _audit_run(db, g, heavy, cases)
    db.commit()
    db.close()


def _requests(
    db: sqlite3.Connection, g: np.random.Generator, ids: list[str], w: np.ndarray, rows: int
) -> None:
    chunk = 100_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        who = g.choice(len(ids), size=n, p=w)
        ts = START + g.random(n) * 7 * DAY
        batch = [
            (
                f"req_{start + i:020x}",
                float(ts[i]),
                ids[who[i]],
                "key_x",
                "chat.completions",
                "m",
                json.dumps([{"role": "user", "content": f"question {start + i} about x"}]),
                None,
                '{"max_tokens": 256}',
                '["an answer"]',
                12,
                200,
                200,
            )
            for i in range(n)
        ]
        db.executemany(
            "INSERT INTO requests (id, created_at, account_id, key_id, endpoint, model, "
            "messages, prompt, params, response_text, prompt_tokens, completion_tokens, "
            "status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            batch,
        )
        sys.stderr.write(f"\rrequests: {start + n:,} of {rows:,}")
    sys.stderr.write("\n")


def _audit_run(db: sqlite3.Connection, g: np.random.Generator, heavy: list[str], n: int) -> None:
    from stillroom.audit.catalog import SCORED

    feats = list(SCORED)
    cal = {
        "features": feats,
        "center": [1.0] * len(feats),
        "scale": [0.5] * len(feats),
        "percentiles": {f: [1.0, 1.5, 2.0] for f in feats},
    }
    db.execute(
        "INSERT INTO audit_runs (id, created_at, source, fpr, threshold, units, accounts, "
        "flagged, rows_used, window_start, window_end, known_benign, calibration, warnings) "
        "VALUES ('run_bench', ?, 'gateway.sqlite', 0.001, 2.0, 9000, 10000, ?, 2000000, ?, ?,"
        " 0, ?, '[]')",
        (time.time(), n, START, START + 7 * DAY, json.dumps(cal)),
    )
    pool = iter(heavy)
    for k in range(n):
        size = 1 if g.random() < 0.85 else int(g.integers(2, 41))
        members = [next(pool) for _ in range(size)]
        unit = members[0] if size == 1 else f"actor:{members[0]}"
        score = 2.0 + float(g.exponential(0.8))
        sev = "high" if score >= 3 else "medium" if score >= 2.3 else "low"
        features = {f: float(g.normal(2.5, 0.5)) for f in feats} | {"requests": 1000.0}
        db.execute(
            "INSERT INTO audit_units VALUES ('run_bench', ?, ?, ?, ?, 1000, ?, '{}', ?, ?, NULL)",
            (
                unit,
                score,
                sev,
                size,
                json.dumps([f"evidence line {k}"]),
                json.dumps(features),
                json.dumps(["an example prompt"]),
            ),
        )
        db.executemany(
            "INSERT INTO audit_unit_accounts VALUES ('run_bench', ?, ?)",
            [(unit, a) for a in members],
        )
        db.execute(
            "INSERT INTO audit_cases (unit, status, first_run, last_run, opened_at, updated_at)"
            " VALUES (?, 'new', 'run_bench', 'run_bench', ?, ?)",
            (unit, time.time(), time.time()),
        )


def _serve(db: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "stillroom", "console", "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the console did not start")


def _timed(client: httpx.Client, urls: list[str]) -> dict[str, float]:
    took = []
    for url in urls:
        t = time.perf_counter()
        r = client.get(url)
        took.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (url, r.status_code, r.text[:200])
    a = np.array(took)
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
        "max_ms": round(float(a.max()), 1),
    }


def measure(db: Path, port: int, seed: int) -> dict[str, Any]:
    from stillroom.console.store import add_reviewer
    from stillroom.serve.db import open_db

    engine = open_db(str(db))
    token = add_reviewer(engine, f"bench-{time.time_ns()}", "viewer")[1]
    engine.dispose()
    proc = _serve(db, port)
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
        c.post("/login", data={"csrf": csrf.group(1) if csrf else "", "token": token})
        ids = [row["id"] for row in c.get("/api/cases?page=1").json()["data"]]
        ids += [
            row["id"] for p in range(2, 6) for row in c.get(f"/api/cases?page={p}").json()["data"]
        ]
        rng = random.Random(seed)
        sample = [rng.choice(ids) for _ in range(60)]
        member = c.get(f"/api/cases/{ids[0]}").json()["accounts"][0]["account_id"]
        queue = [
            "/",
            "/?status=new",
            "/?severity=high",
            "/?min_accounts=2",
            f"/?q={member}",
            "/?page=3",
        ] * 10
        out = {
            "health": _timed(c, ["/health"] * 60),
            "queue": _timed(c, queue),
            "case": _timed(c, [f"/cases/{i}" for i in sample]),
            "case_json": _timed(c, [f"/api/cases/{i}" for i in sample]),
        }
        for kind in ("features", "timeline"):
            urls = [f"/cases/{i}/{kind}.png" for i in dict.fromkeys(sample)][:20]
            out[f"{kind}_png_drawn"] = _timed(c, urls)
            out[f"{kind}_png_kept"] = _timed(c, urls)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "console-bench")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--port", type=int, default=8177)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    db = a.work / f"gateway-{a.accounts}-{a.rows}-{a.cases}.sqlite"
    t = time.perf_counter()
    build(db, a.accounts, a.rows, a.cases, a.seed)
    built_s = time.perf_counter() - t
    result = measure(db, a.port, a.seed)
    target = 300.0
    print(
        json.dumps(
            {
                "benchmark": "console_speed",
                "accounts": a.accounts,
                "log_rows": a.rows,
                "cases": a.cases,
                "build_s": round(built_s, 1),
                "cpus": os.cpu_count(),
                "load_avg_1m": os.getloadavg()[0],
                "target_p95_ms": target,
                "queue_p95_within_target": result["queue"]["p95_ms"] <= target,
                "case_p95_within_target": result["case"]["p95_ms"] <= target,
                **result,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
