"""Harvest throughput against a local OpenAI-compatible server with fixed latency.

Baseline, same run: a bare `openai` async loop with a semaphore at the same concurrency,
same requests, persisting nothing. stillroom's harvest persists every record (SQLite WAL,
top-k signals) and shows its progress bar. The server runs in its own process. Rounds
alternate baseline and harvest so drift on a shared machine hits both alike.

    python benchmarks/harvest_throughput.py [--requests 2000] [--concurrency 32] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from stillroom.config import validate_config
from stillroom.harvest.runner import harvest
from stillroom.testing.fake_openai import fetch_stats

MAX_TOKENS = 16
TOP_LOGPROBS = 5


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillroom.testing.fake_openai", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"the fake server did not start: {url!r}")
    return proc, url


def prompts(n: int, round_: int) -> list[str]:
    return [f"round {round_} prompt {i} about topic {i % 13}" for i in range(n)]


async def bare_loop(url: str, texts: list[str], concurrency: int) -> float:
    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(text: str) -> None:
        async with sem:
            await client.chat.completions.create(
                model="fake-tiny",
                messages=[{"role": "user", "content": text}],
                max_tokens=MAX_TOKENS,
                temperature=1.0,
                seed=1,
                logprobs=True,
                top_logprobs=TOP_LOGPROBS,
            )

    start = time.perf_counter()
    await asyncio.gather(*(one(t) for t in texts))
    elapsed = time.perf_counter() - start
    await client.close()
    return elapsed


def stillroom_harvest(url: str, texts: list[str], concurrency: int, work: Path) -> float:
    src = work / f"prompts-{len(list(work.iterdir()))}.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = validate_config(
        {
            "name": src.stem,
            "runs_dir": str(work / "runs"),
            "prompts": {"path": str(src), "field": "text"},
            "teacher": {"kind": "api", "model": "fake-tiny", "base_url": url,
                        "concurrency": concurrency, "max_retries": 0},
            "generation": {"max_tokens": MAX_TOKENS, "temperature": 1.0, "seed": 1,
                           "top_logprobs": TOP_LOGPROBS},
        },
        "benchmark",
    )  # fmt: skip
    start = time.perf_counter()
    result = harvest(cfg)
    elapsed = time.perf_counter() - start
    assert result.ok == len(texts), result
    rerun = harvest(cfg, show_progress=False)
    assert rerun.called == 0
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    proc, url = start_server(args.latency)
    bare, ours = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                texts = prompts(args.requests, r)
                bare.append(asyncio.run(bare_loop(url, texts, args.concurrency)))
                before = fetch_stats(url).total
                ours.append(stillroom_harvest(url, texts, args.concurrency, Path(tmp)))
                # The harvest plus its rerun asked the server exactly once per prompt.
                assert fetch_stats(url).total - before == args.requests
    finally:
        proc.terminate()
        proc.wait()
    bare_rps = args.requests / statistics.median(bare)
    our_rps = args.requests / statistics.median(ours)
    print(
        json.dumps(
            {
                "benchmark": "harvest_throughput",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "requests": args.requests,
                "concurrency": args.concurrency,
                "server_latency_s": args.latency,
                "rounds": args.rounds,
                "baseline_bare_openai_loop_req_per_s": round(bare_rps, 1),
                "stillroom_harvest_req_per_s": round(our_rps, 1),
                "ratio": round(our_rps / bare_rps, 3),
                "ideal_req_per_s": round(args.concurrency / args.latency, 1),
                "rerun_teacher_calls": 0,
                "per_round_s": {"baseline": bare, "stillroom": ours},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
