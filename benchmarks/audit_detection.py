"""Detection quality of `stillroom audit` on simulated traffic, against a volume baseline.

Calibration: the benign accounts of one simulated log (seed 100). Measurement: other seeds
(default 1, 2, 3), each >= 1,000 accounts and >= 1M requests; nothing from them is used to
fit. Reported per distiller strategy: actors caught (an actor is caught when at least half
of its accounts are flagged), hydra accounts linked into their actor's cluster, and the
measured false-positive rate among benign accounts, at --fpr 0.003 and 0.001. Baseline, same
run: a per-account request-volume threshold calibrated on the same benign accounts at the
same FPR.

    python benchmarks/audit_detection.py [--seeds 1 2 3] [--accounts 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

STRATEGIES = ("bulk_harvest", "low_and_slow", "hydra", "cot_extraction", "mixed_harvest")


def ensure(data: Path, seed: int, accounts: int) -> dict[str, Any]:
    from stillroom.audit.simulate import simulate

    d = data / f"seed{seed}"
    if (d / "manifest.json").exists():
        m = json.loads((d / "manifest.json").read_text())
        if m["accounts"] == accounts:
            return m
    return simulate(d, accounts=accounts, seed=seed)


def labels(m: dict[str, Any]) -> dict[str, dict[str, str]]:
    import pyarrow.parquet as pq

    return {r["account_id"]: r for r in pq.read_table(m["labels"]).to_pylist()}


def evaluate(flagged: set[str], lab: dict[str, dict[str, str]]) -> dict[str, Any]:
    benign = [a for a, r in lab.items() if r["label"] == "benign"]
    fp = [a for a in benign if a in flagged]
    actors: dict[tuple[str, str], list[str]] = defaultdict(list)
    for a, r in lab.items():
        if r["label"] == "distiller":
            actors[(r["kind"], r["actor_id"])].append(a)
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for (kind, _), accts in actors.items():
        total[kind] += 1
        caught[kind] += sum(a in flagged for a in accts) * 2 >= len(accts)
    return {
        "benign": len(benign),
        "fp": len(fp),
        "fp_kinds": dict(Counter(lab[a]["kind"] for a in fp)),
        "caught": dict(caught),
        "actors": dict(total),
    }


def linkage(units: dict[str, str], lab: dict[str, dict[str, str]]) -> dict[str, int]:
    members: dict[str, list[str]] = defaultdict(list)
    for a, u in units.items():
        members[u].append(a)
    hydra: dict[str, list[str]] = defaultdict(list)
    for a, r in lab.items():
        if r["kind"] == "hydra":
            hydra[r["actor_id"]].append(a)
    linked = total = impure = 0
    for accts in hydra.values():
        top, n = Counter(units[a] for a in accts).most_common(1)[0]
        total += len(accts)
        linked += n if n > 1 else 0
        impure += sum(lab[a]["label"] == "benign" for a in members[top])
    return {"hydra_accounts": total, "linked": linked, "benign_in_hydra_clusters": impure}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--calibration-seed", type=int, default=100)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--data", type=Path, default=Path("/tmp/stillroom-audit-detect"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from stillroom.audit.run import decide, measure
    from stillroom.audit.score import fit
    from stillroom.audit.text import Embedder

    emb = Embedder()
    t0 = time.perf_counter()
    cm = ensure(args.data, args.calibration_seed, args.accounts)
    clab = labels(cm)
    cmeas = measure(cm["log"], embedder=emb)
    benign_units = [
        f for f in cmeas.units.values() if all(clab[a]["label"] == "benign" for a in f["members"])
    ]
    cal = fit(benign_units)
    base_ref = np.sort(
        [np.log10(n) for a, n in cmeas.account_requests.items() if clab[a]["label"] == "benign"]
    )
    fprs = (0.003, 0.001)
    agg: dict[str, Any] = {f"{p}": defaultdict(Counter) for p in fprs}
    base: dict[str, Any] = {f"{p}": defaultdict(Counter) for p in fprs}
    link_tot: Counter[str] = Counter()
    per_seed = []
    rows = 0
    for seed in args.seeds:
        m = ensure(args.data, seed, args.accounts)
        rows += m["requests"]
        lab = labels(m)
        meas = measure(m["log"], embedder=emb)
        link_tot.update(linkage(meas.links.units, lab))
        for p in fprs:
            res = evaluate(decide(meas, cal, p).flagged_accounts(), lab)
            thr = cal_quantile(base_ref, p)
            volume = {a for a, n in meas.account_requests.items() if np.log10(n) > thr}
            bres = evaluate(volume, lab)
            for target, r in ((agg[f"{p}"], res), (base[f"{p}"], bres)):
                target["fp"]["fp"] += r["fp"]
                target["fp"]["benign"] += r["benign"]
                target["caught"].update(r["caught"])
                target["actors"].update(r["actors"])
                target["fp_kinds"].update(r["fp_kinds"])
            per_seed.append({"seed": seed, "fpr": p, "requests": m["requests"], **res})
    print(
        json.dumps(
            {
                "benchmark": "audit_detection",
                "seeds": args.seeds,
                "calibration_seed": args.calibration_seed,
                "accounts_per_seed": args.accounts,
                "requests_total": rows,
                "audit": {p: summary(v) for p, v in agg.items()},
                "baseline_volume_threshold": {p: summary(v) for p, v in base.items()},
                "hydra_linkage": {
                    **link_tot,
                    "share": round(link_tot["linked"] / max(1, link_tot["hydra_accounts"]), 3),
                },
                "per_seed": per_seed,
                "wall_s": round(time.perf_counter() - t0, 1),
                "command": "python benchmarks/audit_detection.py --seeds "
                + " ".join(map(str, args.seeds)),
            },
            indent=2,
            default=dict,
        )
    )


def cal_quantile(sorted_ref: np.ndarray, p: float) -> float:
    return float(np.quantile(sorted_ref, 1 - p))


def summary(v: dict[str, Counter[str]]) -> dict[str, Any]:
    recall = {k: f"{v['caught'][k]}/{v['actors'][k]}" for k in STRATEGIES}
    caught, total = sum(v["caught"].values()), sum(v["actors"].values())
    return {
        "recall_by_strategy": recall,
        "recall_actors": round(caught / max(1, total), 3),
        "measured_fpr": round(v["fp"]["fp"] / max(1, v["fp"]["benign"]), 4),
        "false_positives": v["fp"]["fp"],
        "benign_accounts": v["fp"]["benign"],
        "false_positive_kinds": dict(v["fp_kinds"]),
    }


if __name__ == "__main__":
    main()
