"""What a budgeted harvest bills when it is SIGKILLed and rerun, against a local fake teacher.

Each schedule (seeded) runs `stillroom harvest CONFIG --budget B` as a subprocess at
concurrency 8, SIGKILLs it 1-4 times a few stored calls after each start, then lets a last
run go to the budget. The bill is priced from the server's own count: every request it
received, at the usage it answers that body with. Baseline, same run: the same harvest with
no kill. Answers are full length, so each call costs about its worst case and no slack in
the reservations hides spend a rerun forgets.

    python benchmarks/harvest_budget_kills.py [--schedules 20] [--budget 0.04] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.harvest import api_config  # noqa: E402
from tests.helpers.kills import billed_usd, kill_and_rerun, write_config  # noqa: E402

from stillroom.prices import Price  # noqa: E402
from stillroom.testing.fake_openai import FakeServerConfig, start_fake_server  # noqa: E402

PRICE = Price(1.0, 10.0)
LATENCY_S = 0.05


def one_schedule(work: Path, budget: float, kills: int, seed: int) -> dict[str, Any]:
    """Billed/budget for one harvest killed `kills` times (0: the no-kill baseline)."""
    work.mkdir(parents=True)
    with start_fake_server(FakeServerConfig(latency=LATENCY_S)) as srv:
        cfg = api_config(
            work,
            srv.base_url,
            n_prompts=400,
            generation__max_tokens=64,
            generation__seed=seed,
            cost__input_per_1m=PRICE.input_per_1m,
            cost__output_per_1m=PRICE.output_per_1m,
        )
        cfg_path = write_config(cfg, work / "cfg.yaml")
        landed, code = kill_and_rerun(cfg, cfg_path, budget, kills, random.Random(seed))
        billed = billed_usd(srv, PRICE)
    summary = json.loads((cfg.run_dir / "harvest_summary.json").read_text())
    return {
        "seed": seed,
        "kills": landed,
        "exit_code": code,
        "billed_over_budget": billed / budget,
        "run_total_over_billed": summary["run_total_usd"] / billed,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schedules", type=int, default=20)
    ap.add_argument("--budget", type=float, default=0.04)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = one_schedule(Path(tmp) / "no-kill", args.budget, 0, args.seed)
        runs = [
            one_schedule(Path(tmp) / f"s{i}", args.budget, rng.randint(1, 4), args.seed + 1 + i)
            for i in range(args.schedules)
        ]
    ratios = [r["billed_over_budget"] for r in runs]
    print(
        json.dumps(
            {
                "schedules": len(runs),
                "budget_usd": args.budget,
                "kills_landed": sum(r["kills"] for r in runs),
                "worst_billed_over_budget": max(ratios),
                "mean_billed_over_budget": statistics.mean(ratios),
                "baseline_no_kill_billed_over_budget": baseline["billed_over_budget"],
                "min_run_total_over_billed": min(r["run_total_over_billed"] for r in runs),
                "schedules_over_budget": sum(ratio > 1 for ratio in ratios),
                "seconds": round(time.perf_counter() - started, 1),
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
