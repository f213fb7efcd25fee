"""The watermark inside vLLM: detection, false positives, and its cost in tokens/s.

One vLLM server (scripts/start-vllm with STILLROOM_WATERMARK_KEYS naming KEY, default key
"none") answers the same prompts marked (`vllm_xargs.watermark_key_id`) and unmarked, in
alternating rounds of concurrent requests, so a busy machine slows both alike. Reports:
- detection: the share of marked answers (>= 150 scored tokens) with z > 4;
- false positives: the share of unmarked answers with p <= 1e-3 under the serving key, and,
  for a rate measured to 1e-3, of every answer (marked or not) under fresh keys that marked
  nothing here: to a key that did not mark it, any text is unmarked text;
- cost: marked tokens/s over unmarked tokens/s, per round and overall;
- the same key on our own backend: answers from `LocalTeacher` with the key, detected alike.

    STILLROOM_TEST_VLLM_URL=... STILLROOM_WATERMARK_KEYS=KEY.json \
        python benchmarks/vllm_watermark.py [--key KEY.json] \
        [--rounds 10] [--concurrency 8] [--max-tokens 200]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from stillroom.watermark.detect import detect_texts
from stillroom.watermark.key import WatermarkKey, generate_key, load_key

SUBJECTS = [
    "a dragon who bakes bread", "a walk through a market", "how a bicycle works",
    "a trip to the sea", "a village by a river", "a bee's summer day", "a lost umbrella",
    "the first snow of winter", "a robot learning to paint", "an old lighthouse keeper",
    "a garden after rain", "a train crossing mountains", "a cat who guards a library",
    "the night sky in the desert", "a kitchen on a holiday morning", "a violin maker",
]  # fmt: skip
FORMS = ["Write a story about {s}.", "Describe {s} in detail.", "Tell me about {s}."]


def prompts(n: int, offset: int) -> list[str]:
    out = []
    for i in range(offset, offset + n):
        out.append(FORMS[i % len(FORMS)].format(s=SUBJECTS[i % len(SUBJECTS)]))
    return out


def round_trip(url: str, batch: list[str], key_id: str, max_tokens: int, seed: int) -> Any:
    """Answers to `batch`, sent at once; (texts, completion tokens, seconds)."""

    def one(i: int) -> tuple[str, int]:
        body = {"model": "gemma-3-270m", "prompt": batch[i], "max_tokens": max_tokens,
                "min_tokens": max_tokens, "temperature": 1.0, "seed": seed + i,
                "vllm_xargs": {"watermark_key_id": key_id}}  # fmt: skip
        reply = httpx.post(f"{url}/completions", json=body, timeout=1200)
        reply.raise_for_status()
        data = reply.json()
        return data["choices"][0]["text"], int(data["usage"]["completion_tokens"])

    start = time.perf_counter()
    with ThreadPoolExecutor(len(batch)) as pool:
        done = list(pool.map(one, range(len(batch))))
    return [t for t, _ in done], sum(n for _, n in done), time.perf_counter() - start


def local_backend_z(key: WatermarkKey, n: int, max_tokens: int) -> list[float]:
    """z of answers our own backend writes with the same key."""
    from stillroom.teachers.base import GenerationParams, TeacherRequest
    from stillroom.teachers.local import LocalTeacher

    teacher = LocalTeacher.load("gemma-3-270m", dtype="bfloat16", watermark=key)
    params = GenerationParams(max_tokens=max_tokens, temperature=1.0, seed=7)
    done = teacher.generate([TeacherRequest(p, None, params) for p in prompts(n, 100)],
                            logprobs=False)  # fmt: skip
    return [d.z for d in detect_texts([c.choices[0].text for c in done], key)]


def fresh_key_false_positives(texts: list[str], keys: int) -> dict[str, Any]:
    """p <= 1e-3 among all texts under `keys` fresh keys (each text has >= 50 scored pairs)."""
    from stillroom.runtime.loading import load_tokenizer

    tokenizer = load_tokenizer()
    tests = hits = 0
    for _ in range(keys):
        found = [d for d in detect_texts(texts, generate_key(), tokenizer) if d.tokens_scored >= 50]
        tests += len(found)
        hits += sum(d.p_value <= 1e-3 for d in found)
    return {"tests": tests, "p_le_1e3": hits, "rate": round(hits / max(1, tests), 5)}


def main() -> None:
    ap = argparse.ArgumentParser()
    # The server's key file: the first one vLLM was started with (scripts/start-vllm).
    first = os.environ.get("STILLROOM_WATERMARK_KEYS", "").split(os.pathsep)[0] or None
    ap.add_argument("--key", default=first, required=first is None)
    ap.add_argument("--url", default=os.environ.get("STILLROOM_TEST_VLLM_URL"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--local-answers", type=int, default=8)
    ap.add_argument("--fresh-keys", type=int, default=50)
    args = ap.parse_args()
    key = load_key(args.key)
    marked: list[str] = []
    plain: list[str] = []
    rates: list[dict[str, float]] = []
    totals = {"marked": [0, 0.0], "plain": [0, 0.0]}
    for r in range(args.rounds):
        batch = prompts(args.concurrency, r * args.concurrency)
        order = [("marked", key.key_id), ("plain", "none")]
        per: dict[str, float] = {}
        for name, key_id in order if r % 2 == 0 else order[::-1]:
            texts, tokens, seconds = round_trip(args.url, batch, key_id, args.max_tokens, r * 97)
            (marked if name == "marked" else plain).extend(texts)
            totals[name][0] += tokens
            totals[name][1] += seconds
            per[name] = tokens / seconds
        rates.append({k: round(v, 1) for k, v in per.items()})
        print(json.dumps({"round": r, "tokens_per_s": rates[-1]}), flush=True)
    found, null = detect_texts(marked, key), detect_texts(plain, key)
    long_enough = [d for d in found if d.tokens_scored >= 150]
    marked_rate = totals["marked"][0] / totals["marked"][1]
    plain_rate = totals["plain"][0] / totals["plain"][1]
    local = local_backend_z(key, args.local_answers, args.max_tokens)
    print(json.dumps({
        "benchmark": "vllm_watermark",
        "answers": len(marked),
        "max_tokens": args.max_tokens,
        "detected_z_over_4": round(sum(d.z > 4 for d in long_enough) / max(1, len(long_enough)), 4),
        "marked_with_150_scored_tokens": len(long_enough),
        "median_z_marked": round(sorted(d.z for d in found)[len(found) // 2], 2),
        "false_positive_p_le_1e3": round(sum(d.p_value <= 1e-3 for d in null) / len(null), 4),
        "false_positive_fresh_keys": fresh_key_false_positives(marked + plain, args.fresh_keys),
        "tokens_per_s_marked": round(marked_rate, 1),
        "tokens_per_s_unmarked_baseline": round(plain_rate, 1),
        "throughput_ratio": round(marked_rate / plain_rate, 3),
        "rounds": rates,
        "local_backend_z": [round(z, 2) for z in local],
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
