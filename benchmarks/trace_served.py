"""Served-answer test at Gemma scale: did a student train on what the rival's accounts were served?

Takes a finished `stillroom demo` folder, and the students of `benchmarks/trace_mixed.py`
when present. The served answers are the gateway log's replies to the rival's accounts (the
ones the audit names). The teacher replays each one `--twins` + 1 times, with the gateway's
precision and the demo key and new seeds; the replays are kept in
STORY/served-replays-SEED.jsonl. The test sets each served answer beside `--twins` of them
(default 3); the same test with one twin (the paired test) is reported beside it.

Power, each suspect scored on the first n served answers for several n:

- rival: the demo's student, trained on everything those accounts received;
- mixed10 (and mixed10-s240, trained 4x longer): 10% of its answers are served ones, the
  rest the teacher's unwatermarked answers to the same questions from elsewhere.

The null suspects, none of which trained on any of these draws:

- control: the teacher's answers to the same questions, drawn elsewhere;
- mixed10-fresh3000: 10% watermarked with the same key, but answers it was never served;
- dict-indep: a model trained from scratch on dictionary definitions.

Calibration: `--null-runs` runs of `--null-size` questions each. Half the runs set each served
answer beside its twins (the real gateway against the replays), the other half set the last
replay (seed K) in the served answer's place. Every null suspect is scored on every run, with
and without the teacher as baseline; those p-values must be uniform (Kolmogorov-Smirnov).

With `--api`, each suspect is read only through an API: it is served by a real `stillroom
serve` gateway (in a thread, throwaway database) and its log-probs of each chat prompt and
answer come from `completions` with `echo` and `logprobs`, as `stillroom trace --served-by
likelihood` reads a URL. The teacher's baseline is still read with open weights: it is ours.

    python benchmarks/trace_served.py [--story runs/story] [--null-runs 100] [--null-size 5]
    python benchmarks/trace_served.py --api --suspects mixed10,control --no-answers
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stillroom.runtime.loading import load_tokenizer
from stillroom.teachers.local import LocalTeacher
from stillroom.trace.served import (
    answer_logprobs,
    check_key,
    read_served,
    replays,
    trigram_overlap,
    twin_test,
)
from stillroom.trace.suspects import LocalSuspect
from stillroom.watermark.key import load_key
from trace_mass_null import calibration


def rival_accounts(story: Path) -> list[str]:
    """The accounts the demo's audit flagged: every unit scored above its threshold."""
    audit = json.loads((story / "audit.json").read_text())
    return sorted(
        a for u in audit["units"] if u["score"] > audit["threshold"] for a in u["accounts"]
    )


def tested(v: np.ndarray) -> dict[str, Any]:
    """The served-answer test on scores `v`: the served answer in column 0, its twins after."""
    tail = twin_test(v)
    return {
        "pairs": len(v),
        "wins": int((v[:, 0] > v[:, 1:].max(axis=1)).sum()),
        "z": round(tail.z, 3),
        "p_value": tail.p_value,
        "p_bound": tail.p_bound,
    }


def likelihood_results(
    lp: dict[str, np.ndarray],
    ref: dict[str, np.ndarray],
    twins: int,
    sizes: list[int],
    *,
    null: bool,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """One suspect's likelihood tests, with and without the teacher's baseline, with `twins`
    twins and (when more) with one; for a null suspect, also its null runs' p-values."""
    found: dict[str, Any] = {}
    nulls: dict[str, list[float]] = {}
    half, size = args.null_runs // 2, args.null_size
    for label, base in (("likelihood", None), ("likelihood_teacher_baseline", ref)):

        def v(first: str, k: int, base: Any = base) -> np.ndarray:
            """Scores of `first` and of the first k replays, net of the baseline."""
            names = [first] + [f"replay{j}" for j in range(k)]
            m = np.column_stack([lp[x] for x in names])
            return m - np.column_stack([base[x] for x in names]) if base is not None else m

        for tag, k in [(label, twins)] + ([(f"{label}_one_twin", 1)] if twins > 1 else []):
            found[tag] = {str(n): tested(v("served", k)[:n]) for n in sizes}
            if null:
                real, stand_in = v("served", k), v(f"replay{twins}", k)
                runs = [real[i * size : (i + 1) * size] for i in range(half)]
                runs += [stand_in[(half + i) * size : (half + i + 1) * size] for i in range(half)]
                p = [twin_test(r).p_value for r in runs]
                found[tag]["null_runs"] = calibration(p)
                if k == twins:
                    nulls[tag] = p
    return found, nulls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--story", type=Path, default=Path("runs/story"))
    ap.add_argument("--sizes", default="50,100,200,500", help="served answers tested")
    ap.add_argument("--null-runs", type=int, default=100)
    ap.add_argument(
        "--null-size",
        type=int,
        default=5,
        help="questions per null run; 2 x runs x size <= served",
    )
    ap.add_argument("--twins", type=int, default=3, help="replays each served answer is set beside")
    ap.add_argument("--no-answers", action="store_true", help="skip the black-box scoring")
    ap.add_argument("--api", action="store_true", help="read the suspects through a served API")
    ap.add_argument("--suspects", help="comma-separated names (default: all found)")
    args = ap.parse_args()
    story = args.story
    if not (story / "story.json").is_file():
        sys.exit(f"{story}: no finished demo here; run `stillroom demo` first")
    start = time.perf_counter()
    key = load_key(story / "watermark-key.json")
    accounts = rival_accounts(story)
    served = read_served(str(story / "gateway.sqlite"), accounts)
    check_key(served, key)
    n = len(served)
    sizes = [s for s in map(int, args.sizes.split(",")) if s <= n] or [n]

    def teacher() -> LocalTeacher:  # as the demo's gateway ran it
        return LocalTeacher.load("gemma-3-270m", dtype="bfloat16", batch_size=64, watermark=key)

    half, twins = args.null_runs // 2, args.twins
    if 2 * half * args.null_size > n:
        sys.exit(f"{args.null_runs} runs of {args.null_size} need more than the {n} served answers")
    texts: dict[str, list[str]] = {"served": [s.text for s in served]}
    for seed in range(twins + 1):  # the last: the served answer's stand-in in half the nulls
        cache = story / f"served-replays-{seed}.jsonl"
        texts[f"replay{seed}"] = replays(served, teacher, seed=seed, cache=cache)
    generated_s = time.perf_counter() - start
    messages = [s.messages for s in served]

    tok = load_tokenizer()

    def logprobs(folder: str, api: bool = False) -> dict[str, np.ndarray]:
        if api:
            from served_student import api_logprobs

            return api_logprobs(folder, tok, messages, texts)
        model = LocalTeacher.load(folder, batch_size=8)
        return {name: answer_logprobs(model, messages[: len(t)], t) for name, t in texts.items()}

    ref = logprobs("gemma-3-270m")
    out: dict[str, Any] = {
        "benchmark": "trace_served",
        "read_through": "api (completions, echo)" if args.api else "open weights",
        "accounts": accounts,
        "served": n,
        "replay_seconds": round(generated_s, 1),
    }
    candidates = {
        "rival": story / "distiller" / "student",
        "mixed10": story / "mixed10" / "student",
        "mixed10-s240": story / "mixed10-s240" / "student",
        "control": story / "control" / "student",
        "mixed10-fresh3000": story / "mixed10-fresh3000" / "student",
        "dict-indep": story / "match" / "dict-indep" / "student",
    }
    if args.suspects:
        candidates = {n: candidates[n] for n in args.suspects.split(",")}
    nulls = ("control", "mixed10-fresh3000", "dict-indep")
    pooled: list[float] = []
    headline_null: list[float] = []  # the headline scoring's null runs only
    for name, folder in candidates.items():
        if not folder.is_dir():
            out[name] = "missing: run benchmarks/trace_mixed.py (or trace_match_demo.py) first"
            continue
        lp = logprobs(str(folder), api=args.api)
        found, nulls_seen = likelihood_results(lp, ref, twins, sizes, null=name in nulls, args=args)
        for tag, p in nulls_seen.items():
            pooled += p
            headline_null += p if tag == "likelihood_teacher_baseline" else []
        if not args.no_answers:
            said = LocalSuspect(str(folder), batch_size=32).answer(
                [s.messages[0][1] for s in served],
                max_tokens=int(served[0].params.get("max_tokens") or 64),
                temperature=0.0,
                seed=0,
            )
            ans_sets = [texts["served"]] + [texts[f"replay{j}"] for j in range(twins)]
            ov = np.array(
                [[trigram_overlap(tok, a, t[i]) for t in ans_sets] for i, a in enumerate(said)]
            )
            found["answers"] = {str(k): tested(ov[:k]) | {"queries": k} for k in sizes}
        out[name] = found
        print(json.dumps({name: found}), file=sys.stderr, flush=True)
    if pooled:  # none when no null suspect was read
        # The scorings share their runs, so their p-values are not independent: the pooled
        # figure is a summary; each scoring's own is in its `null_runs`.
        out["pooled_nulls"] = calibration(pooled)
        out["headline_null"] = calibration(headline_null)
    # The headline: the 10% student, teacher baseline, every served answer, with the twins
    # asked for and with one (beside the rival's, when it was read).
    out["twins"] = twins
    for name in ("mixed10", "rival"):
        if isinstance(out.get(name), dict):
            best = out[name]["likelihood_teacher_baseline"][str(sizes[-1])]
            one = out[name].get(
                "likelihood_teacher_baseline_one_twin", out[name]["likelihood_teacher_baseline"]
            )[str(sizes[-1])]
            out[f"{name}_p"], out[f"{name}_texts_read"] = best["p_value"], (twins + 1) * sizes[-1]
            out[f"{name}_p_one_twin"] = one["p_value"]
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
