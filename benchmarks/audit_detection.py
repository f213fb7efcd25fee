"""Detection quality of `stillroom audit` on simulated traffic, seeds and workloads held out.

Each seed is one simulated log (1,000 accounts, ~3M requests: chat users, developers,
enterprise pipelines, evaluators, ten production workloads, eight distiller strategies, two
kinds of hydra), audited as a user would, two ways:

- self: no labels anywhere, the log calibrates itself (`self_calibrate`);
- reference: calibrated on a known-benign log, as a provider has one (its vetted customers,
  or last month's log without the accounts it blocked): here the benign accounts of another
  seed's log (--reference-seed), which shares no account, org or prompt with the audited one.

Labels are read only afterwards, to count.

Reported at each requested --fpr: the measured benign FPR, overall and per benign kind;
actors caught per strategy (an actor is caught when at least half of its accounts are
flagged); hydra accounts in one unit with their siblings; benign accounts in a unit with a
distiller. Leave-one-workload-out (reference calibration): for each benign kind W, the
reference is fitted without W's units, and W's own FPR in the audited log is measured against
it: what a provider gets when a customer arrives with a workload its reference has never
seen.

Baseline, same run: a per-account request-volume threshold at the same FPR, set on the same
log's accounts.

    python benchmarks/audit_detection.py [--seeds 41 42 43] [--reference-seed 99]
        [--reference-accounts 3000]
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


def ensure(data: Path, seed: int, accounts: int) -> dict[str, Any]:
    """The simulated log of `seed` (made once), with its accounts table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stillroom.audit.simulate import account_metadata, population, simulate

    d = data / f"seed{seed}"
    if (d / "manifest.json").exists():
        m = json.loads((d / "manifest.json").read_text())
        if m["accounts"] == accounts:
            table = d / "accounts.parquet"
            if not table.exists():  # a log made before accounts tables: the same population
                rows = account_metadata(population(accounts, seed, m["days"]), seed)
                pq.write_table(pa.Table.from_pylist(rows), table)
            return {**m, "accounts_table": str(table)}
    return simulate(d, accounts=accounts, seed=seed)


def labels(m: dict[str, Any]) -> dict[str, dict[str, str]]:
    import pyarrow.parquet as pq

    return {r["account_id"]: r for r in pq.read_table(m["labels"]).to_pylist()}


def evaluate(flagged: set[str], lab: dict[str, dict[str, str]]) -> dict[str, Any]:
    """False positives by benign kind, actors caught by strategy."""
    fp: Counter[str] = Counter()
    benign: Counter[str] = Counter()
    actors: dict[tuple[str, str], list[str]] = defaultdict(list)
    for a, r in lab.items():
        if r["label"] == "benign":
            benign[r["kind"]] += 1
            fp[r["kind"]] += a in flagged
        else:
            actors[(r["kind"], r["actor_id"])].append(a)
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for (kind, _), accts in actors.items():
        total[kind] += 1
        caught[kind] += sum(a in flagged for a in accts) * 2 >= len(accts)
    return {"fp": fp, "benign": benign, "caught": caught, "actors": total}


def linkage(units: dict[str, str], lab: dict[str, dict[str, str]]) -> Counter[str]:
    """Hydra accounts in their actor's largest unit; benign accounts in a distiller's unit."""
    members: dict[str, list[str]] = defaultdict(list)
    for a, u in units.items():
        members[u].append(a)
    out: Counter[str] = Counter(mixed_units=0, benign_in_distiller_units=0)  # shown when 0
    hydra: dict[str, list[str]] = defaultdict(list)
    for a, r in lab.items():
        if r["kind"].startswith("hydra"):
            hydra[r["actor_id"]].append(a)
    for accts in hydra.values():
        _, n = Counter(units[a] for a in accts).most_common(1)[0]
        out["hydra_accounts"] += len(accts)
        out["hydra_with_siblings"] += n if n > 1 else 0
    for accts in members.values():
        labels_here = {lab[a]["label"] for a in accts}
        if labels_here == {"benign", "distiller"}:
            out["mixed_units"] += 1
            out["benign_in_distiller_units"] += sum(lab[a]["label"] == "benign" for a in accts)
    return out


def reference(data: Path, seed: int, accounts: int, emb: Any) -> tuple[Any, dict[str, Any]]:
    """The benign accounts of another seed's log, measured: a known-benign reference."""
    from stillroom.audit.run import measure
    from stillroom.audit.simulate import write_benign_log

    m = ensure(data, seed, accounts)
    out = data / f"seed{seed}" / "benign.parquet"
    if not out.exists():
        write_benign_log(m, out)
    return measure(str(out), embedder=emb, accounts_table=m["accounts_table"]), labels(m)


def lowo(
    meas: Any,
    lab: dict[str, dict[str, str]],
    ref: Any,
    ref_lab: dict[str, dict[str, str]],
    fprs: tuple[float, ...],
) -> dict[str, Any]:
    """Leave one benign kind out of the reference; that kind's FPR in the audited log."""
    from stillroom.audit.run import decide
    from stillroom.audit.score import fit

    kinds = sorted({r["kind"] for r in lab.values() if r["label"] == "benign"})
    out: dict[str, Any] = {}
    for w in kinds:
        mine = {a for a, r in lab.items() if r["kind"] == w}
        rest = [f for f in ref.units.values() if all(ref_lab[a]["kind"] != w for a in f["members"])]
        cal = fit(rest)
        res = {}
        for p in fprs:
            flagged = decide(meas, cal, p).flagged_accounts()
            res[f"{p}"] = [len(flagged & mine), len(mine)]
        out[w] = res
    return out


def main() -> None:  # long: arguments, then each seed audited every way, then one JSON
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[41, 42, 43])
    ap.add_argument("--reference-seed", type=int, default=99)
    ap.add_argument("--fpr", type=float, nargs="+", default=[0.001, 0.003, 0.01])
    ap.add_argument("--accounts", type=int, default=1000)
    # A provider's known-benign log (last month's customers) holds at least as many accounts
    # as the window it audits; 3,000 give some 2,000 benign units, enough for a rate of
    # 0.003 to be bounded by the reference's own scores rather than extrapolated.
    ap.add_argument("--reference-accounts", type=int, default=3000)
    ap.add_argument("--data", type=Path, default=Path("/tmp/stillroom-audit-detect"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from stillroom.audit.run import decide, measure
    from stillroom.audit.score import fit, self_calibrate
    from stillroom.audit.text import Embedder

    emb = Embedder()
    t0 = time.perf_counter()
    fprs = tuple(args.fpr)
    ways = ("self", "reference", "volume_baseline")
    agg: dict[str, Any] = {w: {f"{p}": defaultdict(Counter) for p in fprs} for w in ways}
    held: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    link_tot: Counter[str] = Counter()
    warnings: list[str] = []
    rows = 0
    ref, ref_lab = reference(args.data, args.reference_seed, args.reference_accounts, emb)
    known = fit(list(ref.units.values()))
    for seed in args.seeds:
        m = ensure(args.data, seed, args.accounts)
        rows += m["requests"]
        meas = measure(m["log"], embedder=emb, accounts_table=m["accounts_table"])
        own = self_calibrate(list(meas.units.values()))  # no labels: the log itself
        volume_ref = np.log10(np.array(list(meas.account_requests.values()), dtype=float))
        lab = labels(m)  # read only from here on, to count
        link_tot.update(linkage(meas.links.units, lab))
        for p in fprs:
            thr = float(np.quantile(volume_ref, 1 - p))
            flagged = {
                "volume_baseline": {
                    a for a, n in meas.account_requests.items() if np.log10(n) > thr
                }
            }
            for way, cal in (("self", own), ("reference", known)):
                result = decide(meas, cal, p)
                warnings.extend(f"{way}, seed {seed}, fpr {p}: {w}" for w in result.warnings)
                flagged[way] = result.flagged_accounts()
            for way, accounts in flagged.items():
                r = evaluate(accounts, lab)
                for key in ("fp", "benign", "caught", "actors"):
                    agg[way][f"{p}"][key].update(r[key])
        for w, res in lowo(meas, lab, ref, ref_lab, fprs).items():
            for p, (k, n) in res.items():
                held[w][p][0] += k
                held[w][p][1] += n
    print(
        json.dumps(
            {
                "benchmark": "audit_detection",
                "seeds": args.seeds,
                "reference_seed": args.reference_seed,
                "accounts_per_seed": args.accounts,
                "reference_accounts": args.reference_accounts,
                "requests_total": rows,
                **{way: {p: summary(v, float(p)) for p, v in agg[way].items()} for way in ways},
                "linkage": {
                    **link_tot,
                    "hydra_share": round(
                        link_tot["hydra_with_siblings"] / max(1, link_tot["hydra_accounts"]), 3
                    ),
                },
                "leave_one_workload_out": {
                    w: {p: f"{k}/{n} = {k / max(1, n):.2%}" for p, (k, n) in r.items()}
                    for w, r in held.items()
                },
                "warnings": sorted(set(warnings)),
                "wall_s": round(time.perf_counter() - t0, 1),
                "command": "python benchmarks/audit_detection.py --seeds "
                + " ".join(map(str, args.seeds))
                + f" --reference-seed {args.reference_seed}"
                + f" --reference-accounts {args.reference_accounts}",
            },
            indent=2,
        )
    )


def summary(v: dict[str, Counter[str]], asked: float) -> dict[str, Any]:
    from stillroom.audit.simulate import STRATEGIES

    caught, total = sum(v["caught"].values()), sum(v["actors"].values())
    fp, benign = sum(v["fp"].values()), sum(v["benign"].values())
    return {
        "requested_fpr": asked,
        "measured_fpr": round(fp / max(1, benign), 4),
        "false_positives": fp,
        "benign_accounts": benign,
        "fpr_by_kind": {
            k: f"{v['fp'][k]}/{n} = {v['fp'][k] / n:.1%}" for k, n in sorted(v["benign"].items())
        },
        "recall_actors": round(caught / max(1, total), 3),
        "recall_by_strategy": {k: f"{v['caught'][k]}/{v['actors'][k]}" for k in STRATEGIES},
    }


if __name__ == "__main__":
    main()
