"""Generating trace: queries per CPU-minute of the old code and this tree's, side by side.

The suspect is Gemma 3 270M cut to its first 4 layers with its whole 262k vocabulary, so
the output layer and the sampler weigh as they do at full size. The old code (a git commit,
unpacked with `git archive`) and this tree's run `radioactivity_test` in turn, each in its
own process with its own PYTHONPATH, for several rounds (the order alternates, so neither
always runs on a cooler machine); both ask the same prompts with the same fresh key,
max_tokens and temperature. Each worker times only the test (not the model load) with
`time.process_time`, the CPU seconds of all its threads. "per_round" is queries per
CPU-minute of each round.

The key is fresh, so neither run's suspect ever saw it: both green rates must sit near
gamma and both p-values must be unremarkable (null stays null). "p_pooled" sums the rounds'
tuples (one seen in two rounds counts twice): a summary, not the test's p-value.

Measured (2 shared cores under load ~9, 3 rounds of 32 queries, 128 tokens each): old
17.4 queries per CPU-minute, new 90.9 (5.2x; wall 4.8x); green rates 0.220 and 0.270 at
gamma 0.25, pooled p 0.91 and 0.19.

    python benchmarks/trace_generate_speed.py [--rounds 3] [--queries 64] [--old e0defc9]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def build_suspect(folder: Path) -> None:
    """Gemma 3 270M's first 4 layers, full vocabulary, float32, saved with its tokenizer."""
    from stillroom.runtime.loading import load_lm

    lm, tokenizer, _ = load_lm("gemma-3-270m")
    lm.model.layers = lm.model.layers[:4]
    lm.config.num_hidden_layers = 4
    lm.config.layer_types = lm.config.layer_types[:4]
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def unpack(commit: str, into: Path) -> Path:
    """The `src` folder of `commit`, written under `into`."""
    archive = into / "src.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def worker(args: argparse.Namespace) -> None:
    """One timed trace in this process: prints its measurements as one JSON line."""
    from stillroom.runtime.loading import load_tokenizer
    from stillroom.trace.options import DEFAULT_QUESTIONS
    from stillroom.trace.radioactivity import radioactivity_test
    from stillroom.trace.suspects import LocalSuspect
    from stillroom.watermark.key import load_key

    lines = DEFAULT_QUESTIONS.read_text().splitlines()
    prompts = [json.loads(line)["question"] for line in lines if line.strip()]
    suspect, tokenizer = LocalSuspect(str(args.suspect)), load_tokenizer(str(args.suspect))
    lengths: list[int] = []  # answer tokens: both versions must write as much
    asked = suspect.answer

    def answer(prompts: list[str], **kw: Any) -> list[str]:
        texts = asked(prompts, **kw)
        lengths.extend(map(len, tokenizer(texts, add_special_tokens=False)["input_ids"]))
        return list(texts)

    suspect.answer = answer
    cpu, wall = time.process_time(), time.perf_counter()
    result = radioactivity_test(
        suspect, prompts, load_key(args.key), tokenizer, budget=args.queries, target_p=0.0,
        max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
    )  # fmt: skip
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(json.dumps({
        "cpu_s": cpu, "wall_s": wall, "queries": result.queries,
        "tuples": result.tuples_scored, "green": result.green, "p": result.p_value,
        "answer_tokens": sum(lengths),
    }))  # fmt: skip


def run_one(src: Path, args: argparse.Namespace, key: Path, seed: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable, __file__, "--worker", "--suspect", str(args.suspect), "--key", str(key),
        "--queries", str(args.queries), "--seed", str(seed),
        "--max-tokens", str(args.max_tokens), "--temperature", str(args.temperature),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"worker with {src} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def summary(runs: list[dict[str, Any]], gamma: float) -> dict[str, Any]:
    from scipy.stats import binom

    queries, cpu = sum(r["queries"] for r in runs), sum(r["cpu_s"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    tuples, green = sum(r["tuples"] for r in runs), sum(r["green"] for r in runs)
    return {
        "queries": queries,
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "queries_per_cpu_minute": round(60 * queries / cpu, 2),
        "queries_per_wall_minute": round(60 * queries / wall, 2),
        "per_round": [round(60 * r["queries"] / r["cpu_s"], 2) for r in runs],
        "answer_tokens_per_query": round(sum(r["answer_tokens"] for r in runs) / queries, 1),
        "tuples": tuples,
        "green_rate": round(green / tuples, 4) if tuples else 0.0,
        "p_pooled": float(binom.sf(green - 1, tuples, gamma)) if tuples else 1.0,
        "p_per_round": [r["p"] for r in runs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suspect", type=Path, default=REPO / "runs" / "gemma-3-270m-4-layers")
    ap.add_argument("--old", default="e0defc9", help="the commit to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=64, help="per round and version")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    from stillroom.watermark.key import generate_key, save_key

    if not (args.suspect / "config.json").is_file():
        build_suspect(args.suspect)
    key = generate_key(context_width=1)  # fresh: neither run's suspect ever saw it
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"old": unpack(args.old, Path(tmp)), "new": REPO / "src"}
        key_file = save_key(key, Path(tmp) / "key.json")
        for r in range(args.rounds):
            for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                seed = args.seed + 1000 * r  # both versions ask the same in a round
                runs[name].append(run_one(sources[name], args, key_file, seed))
                print(f"round {r + 1} {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    old, new = summary(runs["old"], key.gamma), summary(runs["new"], key.gamma)
    print(json.dumps({
        "benchmark": "trace_generate_speed", "suspect": str(args.suspect), "old": args.old,
        "rounds": args.rounds, "queries_per_round": args.queries, "max_tokens": args.max_tokens,
        "temperature": args.temperature, "gamma": key.gamma, "old_code": old, "new_code": new,
        "cpu_ratio": round(new["queries_per_cpu_minute"] / old["queries_per_cpu_minute"], 2),
        "wall_ratio": round(new["queries_per_wall_minute"] / old["queries_per_wall_minute"], 2),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
