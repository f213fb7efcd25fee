"""Time to detect: the incremental audit (`stillroom audit --state`) run as the log grows.

One simulated log is replayed in steps of --step-hours: each run reads only the rows logged
since the previous one (the state file keeps the rest) and scores the whole window so far.
An actor is detected at the first run after which at least half of its accounts have been
flagged; its time to detect is the hours from its first request to that run's newest row.
Reported per strategy: median and worst time to detect, and actors never detected. The price
of looking early, same run: the benign accounts flagged by any run (a cumulative FPR, higher
than one run's), beside the last run's own FPR.

    python benchmarks/audit_early.py [--seed 41] [--step-hours 12] [--fpr 0.003]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from audit_detection import ensure, labels, reference


def first_requests(log: str) -> dict[str, float]:
    import duckdb

    rows = duckdb.sql(
        f"SELECT account_id, min(created_at) FROM read_parquet('{log}') GROUP BY account_id"
    ).fetchall()
    return {str(a): float(t) for a, t in rows}


def main() -> None:  # long: the replay in order: arguments, reference, steps, the counts
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=41)
    ap.add_argument("--reference-seed", type=int, default=99)
    ap.add_argument("--self-calibrate", action="store_true", help="No known-benign reference.")
    ap.add_argument("--step-hours", type=float, default=12.0)
    ap.add_argument("--fpr", type=float, default=0.003)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--reference-accounts", type=int, default=3000)  # as audit_detection's
    ap.add_argument("--data", type=Path, default=Path("/tmp/stillroom-audit-detect"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from stillroom.audit.run import audit
    from stillroom.audit.score import fit
    from stillroom.audit.text import Embedder

    t_start = time.perf_counter()
    m = ensure(args.data, args.seed, args.accounts)
    start = first_requests(m["log"])
    lo = min(start.values())
    end = lo + m["days"] * 86400.0
    cal = None
    if not args.self_calibrate:
        ref, _ = reference(args.data, args.reference_seed, args.reference_accounts, Embedder())
        cal = fit(list(ref.units.values()))
    lab = labels(m)
    flagged_at: dict[str, float] = {}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "audit.state"
        t = lo + args.step_hours * 3600.0
        while True:
            until = min(t, end + 1.0)
            t0 = time.perf_counter()
            r = audit(m["log"], fpr=args.fpr, until=until, state=state, calibration=cal,
                      accounts_table=m["accounts_table"], log=lambda _m: None)  # fmt: skip
            for f in r.flagged:
                for a in f["accounts"]:
                    flagged_at.setdefault(a, f["first_flagged"])
            runs.append({"until_hours": round((until - lo) / 3600, 1),
                         "rows_read": r.measured.stats.rows,
                         "flagged": len(r.flagged_accounts()),
                         "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
            last = r
            if until > end:
                break
            t += args.step_hours * 3600.0
    actors: dict[tuple[str, str], list[str]] = defaultdict(list)
    for a, row in lab.items():
        if row["label"] == "distiller":
            actors[(row["kind"], row["actor_id"])].append(a)
    ttd: dict[str, list[float]] = defaultdict(list)
    missed: dict[str, int] = defaultdict(int)
    for (kind, _), accts in actors.items():
        times = sorted(flagged_at[a] for a in accts if a in flagged_at)
        need = (len(accts) + 1) // 2
        if len(times) < need:
            missed[kind] += 1
            continue
        ttd[kind].append((times[need - 1] - min(start[a] for a in accts)) / 3600.0)
    benign = [a for a, row in lab.items() if row["label"] == "benign"]
    ever = sum(a in flagged_at for a in benign)
    final = sum(a in last.flagged_accounts() for a in benign)
    out: dict[str, Any] = {
        "benchmark": "audit_early",
        "seed": args.seed,
        "calibration": "self"
        if args.self_calibrate
        else f"reference seed {args.reference_seed}, {args.reference_accounts} accounts",
        "fpr": args.fpr,
        "step_hours": args.step_hours,
        "time_to_detect_hours": {
            k: {
                "median": round(statistics.median(v), 1) if v else None,
                "worst": round(max(v), 1) if v else None,
                "detected": len(v),
                "missed": missed[k],
            }
            for k, v in sorted({**{k: [] for k in missed}, **ttd}.items())
        },
        "benign_flagged_by_any_run": f"{ever}/{len(benign)} = {ever / len(benign):.2%}",
        "benign_flagged_by_last_run": f"{final}/{len(benign)} = {final / len(benign):.2%}",
        "runs": runs,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "command": f"python benchmarks/audit_early.py --seed {args.seed} "
        f"--step-hours {args.step_hours:g} --fpr {args.fpr:g}"
        + (
            " --self-calibrate"
            if args.self_calibrate
            else f" --reference-seed {args.reference_seed}"
            f" --reference-accounts {args.reference_accounts}"
        ),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
