"""`stillroom demo` as a benchmark: the story's figures as one JSON object.

Runs the demo into `--story` (reusing what a finished run there already holds; `--fresh`
starts over, which is what timing needs) and prints what the issue asks of it: the
distiller's accounts among the audit's flags, ordinary users flagged, both students' trace
p-values and queries, and the wall time.

    python benchmarks/story.py [--story runs/story] [--fresh] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from stillroom.demo.story import run_demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--story", type=Path, default=Path("runs/story"))
    ap.add_argument("--fresh", action="store_true", help="delete the folder first")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.fresh and args.story.exists():
        shutil.rmtree(args.story)
    s = run_demo(args.story, quick=args.quick)
    audit = s["audit"]
    distillers = set(s["cast"]["distiller"])
    ranked = sorted(audit["units"], key=lambda u: -u["score"])
    top = [u for u in ranked if u["role"] == "distiller"]
    first = next((t for t in audit["timeline"] if t["distiller_accounts_flagged"]), None)
    print(
        json.dumps(
            {
                "benchmark": "story",
                "quick": args.quick,
                "total_s": s["total_s"],
                "stage_s": s["stage_s"],
                "distiller_accounts": len(distillers),
                "distiller_accounts_flagged": len(distillers & set(audit["flagged"])),
                "distiller_units_are_top_flags": ranked[: len(top)] == top,
                "benign_users": len(s["cast"]["benign"]),
                "benign_users_flagged": len(set(audit["flagged"]) - distillers),
                "first_flag_at_fraction_of_traffic": first and first["fraction_of_traffic_time"],
                "rival_trace_p": s["traces"]["distiller"]["p_value"],
                "rival_trace_queries": s["traces"]["distiller"]["queries"],
                "control_trace_p": s["traces"]["control"]["p_value"],
                "control_trace_queries": s["traces"]["control"]["queries"],
                "distiller_requests": s["traffic"]["distiller"]["ok"],
                "report": s["report"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
