"""Served-answer test at Gemma scale: did a student train on what the rival's accounts were served?

Takes a finished `stillroom demo` folder, and the students of `benchmarks/trace_mixed.py`
when present. The served answers are the gateway log's replies to the rival's accounts (the
ones the audit names). The teacher replays each one once, with the gateway's precision and
the demo key and a new seed; the replays are kept in STORY/served-replays-SEED.jsonl.

Power, each suspect scored on the first n served answers for several n:

- rival: the demo's student, trained on everything those accounts received;
- mixed10 (and mixed10-s240, trained 4x longer): 10% of its answers are served ones, the
  rest the teacher's unwatermarked answers to the same questions from elsewhere.

The null suspects, none of which trained on any of these draws:

- control: the teacher's answers to the same questions, drawn elsewhere;
- mixed10-fresh3000: 10% watermarked with the same key, but answers it was never served;
- dict-indep: a model trained from scratch on dictionary definitions.

Calibration: `--null-runs` runs of `--null-size` questions each. Half the runs pair each
served answer with its replay (the real gateway against the replay), the other half pair two
further replays (seeds 1 and 2). Every null suspect is scored on every run, with and without
the teacher as baseline; those p-values must be uniform (Kolmogorov-Smirnov).

With `--api`, each suspect is read only through an API: it is served by a real `stillroom
serve` gateway (in a thread, throwaway database) and its log-probs of each chat prompt and
answer come from `completions` with `echo` and `logprobs`, as `stillroom trace --served-by
likelihood` reads a URL. The teacher's baseline is still read with open weights: it is ours.

    python benchmarks/trace_served.py [--story runs/story] [--null-runs 100] [--null-size 10]
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
    paired_test,
    read_served,
    replays,
    trigram_overlap,
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


def tested(d: np.ndarray) -> dict[str, Any]:
    tail = paired_test(d)
    return {
        "pairs": len(d),
        "wins": int((d > 0).sum()),
        "z": round(tail.z, 3),
        "p_value": tail.p_value,
        "p_bound": tail.p_bound,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--story", type=Path, default=Path("runs/story"))
    ap.add_argument("--sizes", default="50,100,200,500", help="served answers tested")
    ap.add_argument("--null-runs", type=int, default=100)
    ap.add_argument("--null-size", type=int, default=10)
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

    half = args.null_runs // 2
    need = half * args.null_size  # questions in the replay-vs-replay runs
    if need > n or half * args.null_size > n:
        sys.exit(f"{args.null_runs} runs of {args.null_size} need {need} served answers; {n} here")
    texts: dict[str, list[str]] = {"served": [s.text for s in served]}
    for seed in (0, 1, 2):
        rows = served if seed == 0 else served[:need]
        cache = story / f"served-replays-{seed}.jsonl"
        texts[f"replay{seed}"] = replays(rows, teacher, seed=seed, cache=cache)
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
    for name, folder in candidates.items():
        if not folder.is_dir():
            out[name] = "missing: run benchmarks/trace_mixed.py (or trace_match_demo.py) first"
            continue
        lp = logprobs(str(folder), api=args.api)
        found: dict[str, Any] = {}
        for label, base in (("likelihood", None), ("likelihood_teacher_baseline", ref)):

            def d(a: str, b: str, lp: dict[str, np.ndarray] = lp, base: Any = base) -> np.ndarray:
                m = min(len(lp[a]), len(lp[b]))
                diff = lp[a][:m] - lp[b][:m]
                return diff - (base[a][:m] - base[b][:m]) if base is not None else diff

            main_d = d("served", "replay0")
            found[label] = {str(k): tested(main_d[:k]) for k in sizes}
            if name in nulls:
                runs = [main_d[i * args.null_size : (i + 1) * args.null_size] for i in range(half)]
                other = d("replay1", "replay2")
                runs += [other[i * args.null_size : (i + 1) * args.null_size] for i in range(half)]
                p = [paired_test(r).p_value for r in runs]
                pooled += p
                found[label]["null_runs"] = calibration(p)
        if not args.no_answers:
            said = LocalSuspect(str(folder), batch_size=32).answer(
                [s.messages[0][1] for s in served],
                max_tokens=int(served[0].params.get("max_tokens") or 64),
                temperature=0.0,
                seed=0,
            )
            ov = np.array(
                [
                    trigram_overlap(tok, a, s) - trigram_overlap(tok, a, f)
                    for a, s, f in zip(said, texts["served"], texts["replay0"], strict=True)
                ]
            )
            found["answers"] = {str(k): tested(ov[:k]) | {"queries": k} for k in sizes}
        out[name] = found
        print(json.dumps({name: found}), file=sys.stderr, flush=True)
    if pooled:  # none when no null suspect was read
        out["pooled_nulls"] = calibration(pooled)
    # The headline: the 10% student, teacher baseline, every served answer (beside the
    # rival's, when it was read).
    for name in ("mixed10", "rival"):
        if isinstance(out.get(name), dict):
            best = out[name]["likelihood_teacher_baseline"][str(sizes[-1])]
            out[f"{name}_p"], out[f"{name}_texts_read"] = best["p_value"], 2 * sizes[-1]
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
