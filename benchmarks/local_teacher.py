"""LocalTeacher on Gemma 3 270M: load time, and generation throughput batched vs one by one.

Prints one JSON object. Both generation runs use the same 16 prompts, sampling parameters
and per-request seeds, with top-20 log-prob recording on. Seeds are per request, so the two
runs draw the same random numbers; their texts still part where padding's last-bit changes
to the logits tip a draw, so the JSON counts how many came out identical. A scoring
figure compares `score_batch` (shared few-shot prefix run once, output layer only where a
label token is predicted) with the naive way: one full forward pass per (prompt, label).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/local_teacher.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np
import torch

from stillroom.runtime.gemma import DEFAULT_TEACHER, cache_root_dir, default_teacher_dir
from stillroom.teachers.base import GenerationParams, TeacherRequest
from stillroom.teachers.local import LocalTeacher

TOPICS = [
    "the ocean", "a lighthouse keeper", "bread baking", "the moon landing", "a lost cat",
    "winter in Oslo", "a chess match", "volcanoes", "the printing press", "honeybees",
    "a night train", "desert stars", "an old violin", "city gardens", "rain in April",
    "the first computer",
]  # fmt: skip
PROMPTS = [f"Write a short paragraph about {t}.\n\n" for t in TOPICS]
MAX_TOKENS = 64
LABELS = [" animal", " plant", " food", " tool", " place", " person"]
EXAMPLES = [
    ("dog", " animal"), ("oak", " plant"), ("bread", " food"), ("hammer", " tool"),
    ("Paris", " place"), ("teacher", " person"), ("cat", " animal"), ("rose", " plant"),
    ("cheese", " food"), ("saw", " tool"), ("London", " place"), ("doctor", " person"),
]  # fmt: skip
FEW_SHOT = "".join(f"Word: {w}\nCategory:{c}\n\n" for w, c in EXAMPLES)
WORDS = ["horse", "tulip", "apple", "wrench", "Rome", "nurse", "eagle", "fern"]


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def generation(teacher: LocalTeacher, batch_size: int) -> tuple[dict[str, Any], list[str]]:
    params = GenerationParams(
        max_tokens=MAX_TOKENS, temperature=1.0, top_p=0.95, seed=0, top_logprobs=20
    )
    requests = [TeacherRequest(prompt=p, params=params) for p in PROMPTS]
    runner = LocalTeacher(teacher.lm, teacher.tokenizer, name=teacher.model, batch_size=batch_size)
    out, seconds = timed(runner.generate, requests)
    tokens = sum(c.usage.completion_tokens for c in out)
    figures = {
        "batch_size": batch_size,
        "requests": len(requests),
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
    }
    return figures, [c.choices[0].text for c in out]


def scoring(teacher: LocalTeacher) -> dict[str, Any]:
    prompts = [f"{FEW_SHOT}Word: {w}\nCategory:" for w in WORDS]
    teacher._prefix = None  # time the prefix's first run too
    batched, batched_s = timed(teacher.score_batch, prompts, LABELS)

    def naive() -> list[list[float]]:
        rows = []
        for prompt in prompts:
            ids = teacher.tokenizer(prompt)["input_ids"]
            row = []
            for label in LABELS:
                cand = teacher.tokenizer(label, add_special_tokens=False)["input_ids"]
                with torch.inference_mode():
                    logits = teacher.lm(torch.tensor([ids + cand])).logits[0].float()
                lp = torch.log_softmax(logits, dim=-1)
                row.append(sum(float(lp[len(ids) - 1 + j, t]) for j, t in enumerate(cand)))
            rows.append(row)
        return rows

    reference, naive_s = timed(naive)
    diff = float(np.max(np.abs(np.array(batched) - np.array(reference))))
    return {
        "prompts": len(prompts),
        "labels": len(LABELS),
        "prompt_tokens": len(teacher.tokenizer(prompts[0])["input_ids"]),
        "score_batch_items_per_s": round(len(prompts) / batched_s, 2),
        "naive_full_forward_items_per_s": round(len(prompts) / naive_s, 2),
        "max_abs_logprob_diff": float(f"{diff:.2e}"),
    }


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a hub
    load_at_start = round(os.getloadavg()[0], 2)
    cached = (cache_root_dir() / DEFAULT_TEACHER / "config.json").is_file()
    _, convert_s = timed(default_teacher_dir)
    teacher, load_s = timed(LocalTeacher.load, DEFAULT_TEACHER)
    del teacher
    teacher, reload_s = timed(LocalTeacher.load, DEFAULT_TEACHER)
    # The first forward passes of a process are several times slower (allocator and kernel
    # warm-up); time steady state, as a long harvest sees it.
    warm_up = [TeacherRequest(prompt=p, params=GenerationParams(max_tokens=4)) for p in PROMPTS]
    teacher.generate(warm_up)
    LocalTeacher(teacher.lm, teacher.tokenizer, name=teacher.model, batch_size=1).generate(
        warm_up[:2]
    )
    batched, batched_texts = generation(teacher, 16)
    single, single_texts = generation(teacher, 1)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            # Other work on the machine slows every figure; the 1-min load average says how much.
            "load_avg_at_start_and_end": [load_at_start, round(os.getloadavg()[0], 2)],
        },
        "python": platform.python_version(),
        "torch": torch.__version__,
        "model": DEFAULT_TEACHER,
        "first_conversion_s": None if cached else round(convert_s, 1),
        "load_from_cache_s": round(load_s, 2),
        "load_from_cache_again_s": round(reload_s, 2),
        "generate": {
            "max_tokens": MAX_TOKENS,
            "sampling": "temperature 1.0, top_p 0.95, seeded",
            "top_logprobs": 20,
            "batched": batched,
            "one_by_one": single,
            "speedup": round(batched["tokens_per_s"] / single["tokens_per_s"], 2),
            "identical_texts": sum(
                a == b for a, b in zip(batched_texts, single_texts, strict=True)
            ),
        },
        "score": scoring(teacher),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
