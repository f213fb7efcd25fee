"""Trace under the null: are the p-values calibrated for models that never saw the key?

Runs on tiny models built here (the two-layer Gemma 3 of tests/helpers/tiny_models.py, 512-token
byte-level BPE): a few minutes on 2 cores. Prints one JSON object; each figure sits beside
the value a calibrated test must give.

- **Generating mode, keys as the randomness.** Models never exposed to any key answer
  `--prompts` prompts (temperature 1, 48 tokens): the "teacher" (a tiny LM that writes whole
  characters), an unrelated random tiny LM, and a **student trained on the teacher's
  unwatermarked answers** (a copy of the teacher fine-tuned on other prompts' answers, as a
  distiller would). Each model's answers are scored exactly as `radioactivity_test` scores
  them (distinct tuples, prompt tuples skipped) against `--keys` random keys.
- **Reading mode, the hard null.** For each of `--read-keys` keys the teacher *with* that key
  (delta 3) writes `--texts` texts at `--read-temperature` (default 0.3: close to its own
  greedy choices, the texts a clean model predicts best); models that never trained on
  them (the teacher without the key, and the student above) read them, scored against that
  same key. A model that predicts well predicts the texts' own (green-leaning) tokens:
  scoring those tuples ("naive") could convict it, which is why `read_mode_test` excludes
  them. Both are reported. The exclusion makes the test conservative here (a clean model's
  favourite token that the writer passed over is more likely red), so the same readers also
  read the teacher's *unwatermarked* answers to the same prompts, scored against each key:
  text that says nothing about the key, where the null is exact.
- **Output match.** `--match-suspects` independent tiny LMs against three candidates and
  three references: how often a parent is named at alpha 0.05 (a valid test: at most 5%).

The exact binomial test is discrete: its p-values are super-uniform, not uniform, so a KS test
against the uniform can reject a valid test when few tuples are scored. Beside the raw KS
p-value we give the randomised p-value's (P(X > x) + U P(X = x), exactly uniform under the
null, so its KS p-value should exceed 0.01 in 99% of runs) and the fraction of raw p-values
at or below 0.01 and 0.05 (a valid test: at most about 0.01 and 0.05).

    HF_HUB_OFFLINE=1 nice -n 19 .venv/bin/python benchmarks/trace_calibration.py [--keys 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.tiny_models import (  # noqa: E402
    SENTENCES,
    fit_on_answers,
    make_tiny_lm,
    make_wordy_tiny_lm,
)

from stillroom.teachers.local import LocalTeacher  # noqa: E402
from stillroom.trace.match import output_match_test  # noqa: E402
from stillroom.trace.radioactivity import TupleScore  # noqa: E402
from stillroom.trace.reading import read_mode_test  # noqa: E402
from stillroom.trace.suspects import LocalSuspect  # noqa: E402
from stillroom.watermark.greenlist import GreenList  # noqa: E402
from stillroom.watermark.key import WatermarkKey  # noqa: E402

WORDS = sorted({w for s in SENTENCES for w in s.split()})
GAMMA = 0.25


def prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]


def loaded(teacher: LocalTeacher) -> LocalSuspect:
    s = LocalSuspect.__new__(LocalSuspect)
    s.teacher, s.name = teacher, teacher.model
    return s


def key(i: int, delta: float = 2.0) -> WatermarkKey:
    return WatermarkKey(np.random.default_rng(10_000 + i).bytes(32), gamma=GAMMA, delta=delta)


def summary(green: list[int], n: list[int], seed: int) -> dict[str, Any]:
    """Calibration figures of exact binomial p-values with these counts."""
    g, m = np.asarray(green), np.asarray(n)
    p = np.where(m > 0, stats.binom.sf(g - 1, m, GAMMA), 1.0)
    u = np.random.default_rng(seed).random(len(g))
    p_rand = stats.binom.sf(g, m, GAMMA) + u * stats.binom.pmf(g, m, GAMMA)
    return {
        "runs": len(g),
        "tuples_scored_median": float(np.median(m)),
        "green_rate": float(g.sum() / max(m.sum(), 1)),
        "ks_p_raw": float(stats.kstest(p, "uniform").pvalue),
        "ks_p_randomized": float(stats.kstest(p_rand, "uniform").pvalue),
        "frac_p_le_0.01": float(np.mean(p <= 0.01)),
        "frac_p_le_0.05": float(np.mean(p <= 0.05)),
        "min_p": float(p.min()),
    }


def generating(models: dict[str, LocalTeacher], asked: list[str], keys: int) -> dict[str, Any]:
    out = {}
    for name, lm in models.items():
        answers = loaded(lm).answer(asked, max_tokens=48, temperature=1.0, seed=1)
        tok = lm.tokenizer
        answer_ids = tok(answers, add_special_tokens=False)["input_ids"]
        prompt_ids = tok(asked, add_special_tokens=False)["input_ids"]
        green, n = [], []
        for i in range(keys):
            score = TupleScore(GreenList(key(i)))
            for ids in prompt_ids:
                score.exclude(ids)
            for ids in answer_ids:
                score.add(ids)
            green.append(score.green)
            n.append(score.scored)
        out[name] = summary(green, n, seed=1)
    return out


def reading(
    writer: LocalTeacher,
    readers: dict[str, LocalTeacher],
    keys: int,
    texts: int,
    temperature: float,
) -> dict[str, Any]:
    counts: dict[str, tuple[list[int], list[int]]] = {}
    asked = prompts(texts, seed=7)
    plain = loaded(writer).answer(asked, max_tokens=32, temperature=temperature, seed=0)
    for i in range(keys):
        k = key(1000 + i, delta=3.0)
        marked = LocalTeacher(writer.lm, writer.tokenizer, name="writer", watermark=k)
        ours = loaded(marked).answer(asked, max_tokens=32, temperature=temperature, seed=i)
        for name, lm in readers.items():
            for rule, read, exclude in (
                ("watermarked_texts", ours, True),
                ("watermarked_texts_naive", ours, False),
                ("unwatermarked_texts", plain, True),
            ):
                r = read_mode_test(
                    name, read, k, lm.tokenizer, budget=texts, exclude_texts=exclude, model=lm
                )
                g, n = counts.setdefault(f"{name}/{rule}", ([], []))
                g.append(r.green)
                n.append(r.tuples_scored)
    return {name: summary(g, n, seed=2) for name, (g, n) in counts.items()}


def matching(root: Path, suspects: int) -> dict[str, Any]:
    family = {f"c{i}": make_tiny_lm(root / f"c{i}", seed=100 + i) for i in range(3)}
    family |= {f"r{i}": make_tiny_lm(root / f"r{i}", seed=200 + i) for i in range(3)}
    models = {n: loaded(LocalTeacher.load(str(p), batch_size=64)) for n, p in family.items()}
    asked, tok = prompts(64, seed=11), models["c0"].teacher.tokenizer
    named, min_p = 0, 1.0
    for j in range(suspects):
        path = make_tiny_lm(root / "suspect", seed=300 + j)
        suspect = loaded(LocalTeacher.load(str(path), batch_size=64))
        r = output_match_test(
            suspect,
            {n: m for n, m in models.items() if n.startswith("c")},
            {n: m for n, m in models.items() if n.startswith("r")},
            asked,
            tok,
            max_tokens=16,
            alpha=0.05,
        )
        named += r.parent is not None
        min_p = min(min_p, *(c.p_holm for c in r.candidates))
    return {
        "suspects": suspects,
        "parent_named": named,
        "frac_parent_named": named / suspects,
        "min_p_holm": min_p,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=200, help="random keys, generating mode")
    ap.add_argument("--prompts", type=int, default=64, help="answers per model, generating")
    ap.add_argument("--read-keys", type=int, default=100, help="keys (and texts), reading")
    ap.add_argument("--texts", type=int, default=32, help="watermarked texts per key, reading")
    ap.add_argument(
        "--read-temperature", type=float, default=0.3, help="the watermarked writer's sampling"
    )
    ap.add_argument("--match-suspects", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="trace_calibration."))
    try:
        teacher_dir = make_wordy_tiny_lm(root / "teacher")
        other_dir = make_tiny_lm(root / "unrelated", seed=5)
        # The student of unwatermarked outputs: a copy of the teacher fine-tuned on them.
        teach = prompts(256, seed=3)
        teacher = LocalTeacher.load(str(teacher_dir), batch_size=64)
        teacher.model = "teacher"  # sampling seeds derive from the name, not the temp path
        plain = loaded(teacher).answer(teach, max_tokens=48, temperature=1.0, seed=0)
        shutil.copytree(teacher_dir, root / "student")
        fit_on_answers(root / "student", teach, plain, steps=60, lr=3e-3)
        models = {
            "teacher": teacher,
            "unrelated": LocalTeacher.load(str(other_dir), batch_size=64),
            "student_of_unwatermarked": LocalTeacher.load(str(root / "student"), batch_size=64),
        }
        for name, lm in models.items():
            lm.model = name
        t0 = time.perf_counter()
        gen = generating(models, prompts(args.prompts, seed=5), args.keys)
        t1 = time.perf_counter()
        readers = {n: models[n] for n in ("teacher", "student_of_unwatermarked")}
        read = reading(teacher, readers, args.read_keys, args.texts, args.read_temperature)
        t2 = time.perf_counter()
        match = matching(root, args.match_suspects)
        t3 = time.perf_counter()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "runs_on": "tiny two-layer Gemma 3 LMs (tests/helpers/tiny_models.py), CPU",
        "generating_mode": {"keys": args.keys, "answers_per_model": args.prompts, **gen},
        "reading_mode": {
            "keys": args.read_keys,
            "texts_per_key": args.texts,
            "writer_temperature": args.read_temperature,
            "delta": 3.0,
            **read,
        },
        "output_match_null": {"alpha": 0.05, **match},
        "expected_if_calibrated": {
            "ks_p_randomized": "> 0.01 in 99% of runs",
            "ks_p_raw": "> 0.01 when many tuples are scored; may be lower for a discrete test",
            "frac_p_le_0.01": "<= 0.01 (+ noise: 3 sd over 100 runs is 0.03)",
            "frac_p_le_0.05": "<= 0.05 (+ noise: 3 sd over 100 runs is 0.065)",
            "frac_parent_named": "<= 0.05",
        },
        "seconds": {
            "generating": round(t1 - t0, 1),
            "reading": round(t2 - t1, 1),
            "output_match": round(t3 - t2, 1),
            "total": round(time.perf_counter() - start, 1),
        },
        "threads": args.threads,
        "load_average_1m": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
