"""Audit throughput: a 10M-row simulated request log through `stillroom audit`, DuckDB engine.

Measures the whole audit (ingest, text sample, links, features, score, report) in a child
process: wall time and peak RSS. Baseline, same file, same run: the plain DuckDB scan that
any audit must at least do (per-account count and token sums over the Parquet file).

    python benchmarks/audit_scale.py [--rows 10000000] [--data /tmp/stillroom-audit-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROWS_PER_1000_ACCOUNTS = 3_200_000  # what the default population sends in 7 days


def ensure_log(data: Path, rows: int) -> dict:
    manifest = data / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if m["requests"] >= rows:
            return m
    from stillroom.audit.simulate import simulate

    accounts = int(rows / ROWS_PER_1000_ACCOUNTS * 1000) + 1
    return simulate(data, accounts=accounts, seed=42)


def baseline(path: Path) -> float:
    import duckdb

    con = duckdb.connect()
    t0 = time.perf_counter()
    con.sql(
        f"SELECT account_id, count(*), sum(prompt_tokens), sum(completion_tokens) "
        f"FROM read_parquet('{path}') GROUP BY account_id"
    ).fetchall()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--data", type=Path, default=Path("/tmp/stillroom-audit-scale"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    m = ensure_log(args.data, args.rows)
    log = Path(m["log"])
    out = args.data / "audit.json"
    cmd = [
        sys.executable,
        "-c",
        "from stillroom.cli import main; main()",
        "audit",
        str(log),
        "--format",
        "json",
        "--json",
        str(out),
        "--fpr",
        "0.001",
    ]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"audit failed: {proc.stderr[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kib = usage.ru_maxrss
    result = json.loads(out.read_text())
    base = baseline(log)
    print(
        json.dumps(
            {
                "benchmark": "audit_scale",
                "rows": m["requests"],
                "accounts": m["accounts"],
                "log_bytes": log.stat().st_size,
                "audit_wall_s": round(wall, 1),
                "audit_peak_rss_gib": round(peak_kib / 2**20, 2),
                # CPU seconds (user + system, both cores): what the audit cost, whatever else
                # the machine was running
                "audit_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                "audit_stage_s": {
                    k: round(v, 1) for k, v in result["timings"].items() if "_cpu" not in k
                },
                "audit_stage_cpu_s": {
                    k: round(v, 1) for k, v in result["timings"].items() if "_cpu" in k
                },
                "flagged_units": len(result["flagged"]),
                "baseline_duckdb_scan_aggregate_s": round(base, 1),
                "audit_over_baseline": round(wall / base, 1),
                "targets": {"wall_s": 120, "peak_rss_gib": 4},
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "load_average_1_5_15": {
                    "before": [round(x, 2) for x in load_before],
                    "after": [round(x, 2) for x in os.getloadavg()],
                },
                "command": "python benchmarks/audit_scale.py --rows 10000000",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
