"""vLLM as the serving engine: harvest throughput, and logit KD from a vLLM harvest.

One real vLLM server (scripts/start-vllm, Gemma 3 270M, bf16) answers everything.

1. Throughput. Baseline, same run: a bare `openai.AsyncOpenAI` loop with a semaphore at the
   same concurrency, the same requests and parameters (completions, top-20 log-probs, token
   ids asked with return_tokens_as_token_ids / return_token_ids), persisting nothing.
   stillroom's harvest (`teacher.kind: api`, `token_ids: true`) stores every record. Rounds
   alternate the order (A,B then B,A) so drift on a shared machine, and vLLM's prefix cache
   (the second arm of a round reads prompts the first already sent), hit both alike.
   Floor: harvest tokens/s >= 0.9x the bare loop's.
2. Logit KD. The same prompts harvested greedily (temperature 0) from vLLM and from the
   local teacher (Gemma 3 270M, bf16), then the same small student (Gemma shrunk to 2
   layers, trimmed vocabulary) trained with top-k logit KD from each, with several seeds.
   Figure: the trainer's validation KL to its own harvest's top-k. Noise: the seed-to-seed
   spread of the same harvest. Floor: the vLLM-vs-local gap of the seed means is within
   that spread. Also reports how many greedy answers match exactly and how well the two
   stores' top-20 agree where the answers agree.

    STILLROOM_TEST_VLLM_URL=... python benchmarks/vllm_harvest.py [--rounds 6]
        [--concurrency 8] [--max-tokens 48] [--requests 32] [--kd-prompts 48] [--seeds 3]
        [--steps 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import openai

from stillroom.config import validate_config
from stillroom.harvest.runner import harvest
from stillroom.harvest.signals import decode_topk
from stillroom.train.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kd_vs_sequence import TEMPLATES, TOPICS

MODEL = "gemma-3-270m"
TOP_LOGPROBS = 20
THROUGHPUT_FLOOR = 0.9
PROMPTS = [t.format(t=topic) for topic, t in itertools.product(TOPICS, TEMPLATES)]


# ---- part 1: throughput ----------------------------------------------------------------


async def bare_loop(url: str, texts: list[str], concurrency: int, max_tokens: int) -> int:
    """The baseline: the same completions requests through the plain client; returns the
    completion tokens the server reported."""
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(text: str) -> int:
        async with sem:
            reply = await client.completions.create(
                model=MODEL,
                prompt=text,
                n=1,
                max_tokens=max_tokens,
                temperature=0.0,
                logprobs=TOP_LOGPROBS,
                extra_body={"return_tokens_as_token_ids": True, "return_token_ids": True},
            )
            assert reply.usage is not None
            return reply.usage.completion_tokens

    try:
        return sum(await asyncio.gather(*(one(t) for t in texts)))
    finally:
        await client.close()


def harvest_raw(
    prompts: Path, name: str, teacher: dict[str, Any], max_tokens: int
) -> dict[str, Any]:
    """A greedy top-20 harvest of `prompts`, ready for logit KD (see `train_config`)."""
    return {
        "name": name,
        "runs_dir": str(prompts.parent / "runs"),
        "prompts": {"path": str(prompts), "field": "text", "id_field": "id"},
        "teacher": teacher,
        "generation": {"max_tokens": max_tokens, "temperature": 0.0,
                       "top_logprobs": TOP_LOGPROBS},
        "split": {"train": 0.75, "validation": 0.25, "test": 0.0},
    }  # fmt: skip


def api_teacher(url: str, concurrency: int) -> dict[str, Any]:
    return {"kind": "api", "model": MODEL, "base_url": url, "endpoint": "completions",
            "token_ids": True, "api_key_env": "STILLROOM_NO_KEY", "concurrency": concurrency,
            "max_retries": 0}  # fmt: skip


def write_prompts(path: Path, texts: list[str]) -> None:
    path.write_text(
        "".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )


def stillroom_harvest(url: str, texts: list[str], args: argparse.Namespace, work: Path) -> int:
    name = f"tp-{len(list(work.glob('tp-*.jsonl')))}"
    write_prompts(work / f"{name}.jsonl", texts)
    cfg = validate_config(
        harvest_raw(
            work / f"{name}.jsonl", name, api_teacher(url, args.concurrency), args.max_tokens
        ),
        "benchmark",
    )
    result = harvest(cfg, show_progress=False)
    assert result.ok == len(texts) and result.errors == 0, result
    return result.completion_tokens


def timed(fn: Any, *a: Any) -> dict[str, float]:
    start = time.perf_counter()
    tokens = fn(*a)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "tokens": tokens}


def throughput(url: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    arms: dict[str, list[dict[str, float]]] = {"bare_openai_loop": [], "stillroom_harvest": []}
    run = {
        "bare_openai_loop": lambda texts: asyncio.run(
            bare_loop(url, texts, args.concurrency, args.max_tokens)
        ),
        "stillroom_harvest": lambda texts: stillroom_harvest(url, texts, args, work),
    }
    for r in range(args.rounds):
        texts = [
            PROMPTS[(r * args.requests + i) % len(PROMPTS)] + f" ({r})"
            for i in range(args.requests)
        ]
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for arm in order:
            arms[arm].append(timed(run[arm], texts) | {"order": order.index(arm)})
    return throughput_summary(arms, args.requests)


def throughput_summary(arms: dict[str, list[dict[str, float]]], requests: int) -> dict[str, Any]:
    """Per round and overall tokens/s and requests/s of each arm, and harvest over bare."""
    out: dict[str, Any] = {}
    for arm, rounds in arms.items():
        seconds = sum(r["seconds"] for r in rounds)
        tokens = sum(r["tokens"] for r in rounds)
        out[arm] = {
            "tokens_per_s": round(tokens / seconds, 2),
            "requests_per_s": round(requests * len(rounds) / seconds, 3),
            "completion_tokens": int(tokens),
            "per_round": [
                {"tokens_per_s": round(r["tokens"] / r["seconds"], 2),
                 "requests_per_s": round(requests / r["seconds"], 3),
                 "seconds": r["seconds"], "went": "first" if r["order"] == 0 else "second"}
                for r in rounds
            ],
        }  # fmt: skip
    bare, ours = out["bare_openai_loop"], out["stillroom_harvest"]
    ratio = ours["tokens_per_s"] / bare["tokens_per_s"]
    per_round = [
        round(o["tokens_per_s"] / b["tokens_per_s"], 3)
        for o, b in zip(ours["per_round"], bare["per_round"], strict=True)
    ]
    return out | {
        "ratio_tokens_per_s": round(ratio, 3),
        "ratio_per_round": per_round,
        "ratio_median_of_rounds": round(statistics.median(per_round), 3),
        "floor": THROUGHPUT_FLOOR,
        "passed": ratio >= THROUGHPUT_FLOOR,
    }


# ---- part 2: logit KD from each harvest --------------------------------------------------


def read_answers(run_dir: Path) -> dict[str, tuple[list[int], np.ndarray, np.ndarray]]:
    """prompt id -> (answer token ids, top-k ids (T, k), top-k log-probs (T, k)) as stored."""
    with sqlite3.connect(run_dir / "harvest.sqlite") as db:
        rows = db.execute(
            "SELECT c.prompt_id, p.token_ids, p.topk FROM calls c"
            " JOIN completions p ON p.call_key = c.key WHERE c.status = 'ok'"
        ).fetchall()
    out = {}
    for prompt_id, token_ids, topk in rows:
        sig = decode_topk(topk)
        out[prompt_id] = (np.frombuffer(token_ids, "<i4").tolist(), sig.ids, sig.logprobs)
    return out


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def topk_agreement(
    a: dict[str, tuple[list[int], np.ndarray, np.ndarray]],
    b: dict[str, tuple[list[int], np.ndarray, np.ndarray]],
    k: int = TOP_LOGPROBS,
) -> dict[str, Any]:
    """How alike two harvests of the same prompts are: exact answers, and at every position
    whose context both share (the common prefix, plus the first position that differs),
    the top-1, the overlap of the two top-k id sets, and the log-prob gap on shared ids."""
    shared = sorted(a.keys() & b.keys())
    exact = top1 = positions = 0
    overlaps: list[float] = []
    gaps: list[float] = []
    for pid in shared:
        (ids_a, top_a, lp_a), (ids_b, top_b, lp_b) = a[pid], b[pid]
        exact += ids_a == ids_b
        n = min(common_prefix(ids_a, ids_b) + 1, len(ids_a), len(ids_b))
        for t in range(n):
            row_a = dict(zip(top_a[t, :k].tolist(), lp_a[t, :k].tolist(), strict=True))
            row_b = dict(zip(top_b[t, :k].tolist(), lp_b[t, :k].tolist(), strict=True))
            row_a.pop(-1, None)  # -1: no entry (fewer than k stored)
            row_b.pop(-1, None)
            both = row_a.keys() & row_b.keys()
            positions += 1
            top1 += int(top_a[t, 0] == top_b[t, 0])
            overlaps.append(len(both) / max(len(row_a), len(row_b), 1))
            gaps.extend(abs(row_a[i] - row_b[i]) for i in both)
    return {
        "answers_compared": len(shared),
        "answers_identical": exact,
        "positions_compared": positions,
        "top1_agree": round(top1 / max(positions, 1), 4),
        "topk_id_overlap_mean": round(float(np.mean(overlaps)), 4) if overlaps else None,
        "logprob_abs_gap_mean": round(float(np.mean(gaps)), 4) if gaps else None,
        "logprob_abs_gap_p99": round(float(np.quantile(gaps, 0.99)), 4) if gaps else None,
    }


def train_config(raw: dict[str, Any], name: str, seed: int, steps: int) -> Any:
    """The harvest's config under a new name (its own run folder) with the logit-KD student:
    Gemma shrunk to 2 layers (0 and 17) with the vocabulary trimmed to what the harvest used."""
    from stillroom.runtime.gemma import default_teacher_dir

    train_section = {
        "objective": "logits", "alpha": 1.0, "seed": seed,
        "student": {"init": "shrink", "path": str(default_teacher_dir()), "keep_every": 17,
                    "trim_vocab": True},
        "max_steps": steps, "batch_tokens": 512, "lr": 5e-4, "warmup_steps": 3,
        "eval_every": steps, "checkpoint_every": 0, "early_stopping_patience": None,
    }  # fmt: skip
    return validate_config(raw | {"name": name, "train": train_section}, "benchmark")


def copy_harvest(raw: dict[str, Any], cfg: Any) -> None:
    """The harvest's store into cfg's run folder, so each training has a folder of its own."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with (
        sqlite3.connect(validate_config(raw, "benchmark").run_dir / "harvest.sqlite") as src,
        sqlite3.connect(cfg.run_dir / "harvest.sqlite") as dst,
    ):
        src.backup(dst)  # a consistent copy, WAL included


def train_from(raw: dict[str, Any], name: str, seed: int, steps: int) -> dict[str, Any]:
    cfg = train_config(raw, name, seed, steps)
    copy_harvest(raw, cfg)
    r = train(cfg, quiet=True)
    assert r.best_val is not None and "val_kl" in r.best_val, r
    return {"seed": seed, "val_kl": round(r.best_val["val_kl"], 4),
            "val_ce": round(r.best_val["val_ce"], 4), "steps": r.steps,
            "seconds": round(r.elapsed_s, 1), "student": r.student,
            "student_dir": r.student_dir}  # fmt: skip


def val_kl_on(raw: dict[str, Any], student_dir: str, name: str) -> float:
    """A trained student's validation KL to another harvest's top-k, by the trainer's own
    validation code: a Trainer on that harvest, its student swapped for the trained one."""
    from stillroom.train.students import load_student
    from stillroom.train.trainer import Trainer

    cfg = train_config(raw, name, 0, 1)
    copy_harvest(raw, cfg)
    trainer = Trainer(cfg, quiet=True)
    return round(trainer.evaluate_student(load_student(Path(student_dir)))["val_kl"], 4)


def kd_summary(runs: dict[str, list[dict[str, Any]]], key: str = "val_kl") -> dict[str, Any]:
    """The vLLM-vs-local gap of the seed means of `key` beside the seed-to-seed spread (the
    largest |KL(seed a) - KL(seed b)| within either harvest)."""
    means = {src: statistics.mean(r[key] for r in rs) for src, rs in runs.items()}
    spread = max(
        abs(a[key] - b[key]) for rs in runs.values() for a, b in itertools.combinations(rs, 2)
    )
    gap = abs(means["vllm"] - means["local"])
    # Same seed, same batch order where the answers agree: the per-seed differences show
    # whether one harvest is ahead every time, which the means alone hide.
    pairs = zip(runs["vllm"], runs["local"], strict=True)
    paired = [round(v[key] - lo[key], 4) for v, lo in pairs]
    return {
        "val_kl_vllm_harvest_mean": round(means["vllm"], 4),
        "val_kl_local_harvest_mean": round(means["local"], 4),
        "gap": round(gap, 4),
        "seed_to_seed_spread": round(spread, 4),
        "vllm_minus_local_per_seed": paired,
        "passed": gap <= spread,
    }


def harvest_both(url: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Both teachers answer the same prompts; returns their configs and harvest figures."""
    prompts = work / "kd.jsonl"
    write_prompts(prompts, PROMPTS[: args.kd_prompts])
    teachers = {
        "vllm": api_teacher(url, args.concurrency),
        "local": {"kind": "local", "model": MODEL, "dtype": "bfloat16", "batch_size": 16},
    }
    out: dict[str, Any] = {}
    for src, teacher in teachers.items():
        raw = harvest_raw(prompts, f"kd-{src}", teacher, args.kd_max_tokens)
        start = time.perf_counter()
        h = harvest(validate_config(raw, "benchmark"), show_progress=False)
        assert h.ok == args.kd_prompts and h.errors == 0, h
        out[src] = {"raw": raw, "completions": h.ok, "completion_tokens": h.completion_tokens,
                    "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    return out


def logit_kd(url: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    harvests = harvest_both(url, args, work)
    agreement = topk_agreement(
        read_answers(validate_config(harvests["vllm"]["raw"], "b").run_dir),
        read_answers(validate_config(harvests["local"]["raw"], "b").run_dir),
    )
    runs: dict[str, list[dict[str, Any]]] = {"vllm": [], "local": []}
    # Seeds outermost, sources alternating within: drift hits both sources alike.
    for seed in range(args.seeds):
        for src in runs:
            raw = harvests[src]["raw"]
            runs[src].append(train_from(raw, f"train-{src}-{seed}", seed, args.steps))
    student = runs["vllm"][0]["student"]
    for src, rs in runs.items():
        for r in rs:
            # Every student against the local teacher's validation top-k: one reference set
            # for all, where the trainer's own figure reads each harvest's own answers.
            r["val_kl_on_local_harvest"] = val_kl_on(
                harvests["local"]["raw"], r.pop("student_dir"), f"xeval-{src}-{r['seed']}"
            )
            r.pop("student")
    # The swap reads a local-harvest student exactly as the trainer did.
    for r in runs["local"]:
        assert abs(r["val_kl_on_local_harvest"] - r["val_kl"]) < 1e-3, r
    return {
        "harvests": {
            src: {k: v for k, v in h.items() if k != "raw"} for src, h in harvests.items()
        },
        "harvest_agreement": agreement,
        "student": {k: student.get(k) for k in ("layers", "params_student", "vocab_student")},
        "train_runs": runs,
        "on_one_reference": kd_summary(runs, "val_kl_on_local_harvest"),
    } | kd_summary(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("STILLROOM_TEST_VLLM_URL"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=32, help="prompts per round and arm")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--kd-prompts", type=int, default=48)
    ap.add_argument("--kd-max-tokens", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--skip", choices=["throughput", "kd"], help="run one part only")
    args = ap.parse_args()
    if not args.url:
        raise SystemExit("name the vLLM server: --url or STILLROOM_TEST_VLLM_URL")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out: dict[str, Any] = {
        "benchmark": "vllm_harvest",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "server": f"vLLM at {args.url}, {MODEL} (bf16), completions endpoint",
        "args": {k: v for k, v in vars(args).items() if k != "url"},
        "load_avg_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.skip != "throughput":
            out["throughput"] = throughput(args.url, args, Path(tmp))
        if args.skip != "kd":
            out["logit_kd"] = logit_kd(args.url, args, Path(tmp))
    out["load_avg_at_end"] = os.getloadavg()[0]
    out["passed"] = {
        part: out[part]["passed"] for part in ("throughput", "logit_kd") if part in out
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
