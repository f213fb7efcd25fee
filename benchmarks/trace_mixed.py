"""Radioactivity when only part of a student's training data was watermarked (Gemma scale).

Takes a finished `stillroom demo` folder, which holds two harvests of the same prompts from
the same model: one through the watermarked gateway (distiller/) and one without (control/).
Builds a third harvest that is the control with a random `--fraction` of its answers
replaced by the watermarked answer to the same request, trains a student on it with the
demo's settings, and traces it with the key, both ways:

- generating (black box): the student answers held-out questions; its answers are scored;
- reading (open weights): the student reads fresh, unwatermarked teacher answers to other
  held-out questions, and its next-token predictions are scored (Sander et al. 2024's
  reading mode; see `stillroom.trace.reading` for why unwatermarked texts keep the null
  exact);
- mass (open weights): the same texts, scored on the student's whole next-token
  distribution net of the teacher's (`stillroom.trace.mass`).

The story's two students, 100% and 0% watermarked, are the baselines, traced the same two
ways in the same run (generating: read from the story's own trace).

    python benchmarks/trace_mixed.py [--story runs/story] [--fraction 0.1] [--budget 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from stillroom.demo.story import FULL, MODEL, _harvest_config
from stillroom.runtime.loading import load_tokenizer
from stillroom.trace.mass import mass_test
from stillroom.trace.radioactivity import radioactivity_test
from stillroom.trace.reading import read_mode_test
from stillroom.trace.suspects import LocalSuspect
from stillroom.train.trainer import train
from stillroom.watermark.key import load_key


def mix(story: Path, target: Path, fraction: float, seed: int) -> int:
    """Copy the control harvest to `target`, swapping in watermarked answers; returns how
    many answers were swapped."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with sqlite3.connect(story / "control" / "harvest.sqlite") as src:
        src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(story / "control" / "harvest.sqlite", target / "harvest.sqlite")
    db = sqlite3.connect(target / "harvest.sqlite")
    db.execute("ATTACH DATABASE ? AS wm", (str(story / "distiller" / "harvest.sqlite"),))
    keys = [k for (k,) in db.execute("SELECT call_key FROM completions WHERE choice = 0")]
    marked = set(db.execute("SELECT call_key FROM wm.completions WHERE choice = 0"))
    keys = [k for k in keys if (k,) in marked]  # the same request in both harvests
    chosen = random.Random(seed).sample(sorted(keys), round(fraction * len(keys)))
    with db:
        for k in chosen:
            db.execute(
                "UPDATE completions SET (text, finish_reason, tokens) = (SELECT text, "
                "finish_reason, tokens FROM wm.completions WHERE call_key = ? AND choice = 0) "
                "WHERE call_key = ? AND choice = 0",
                (k, k),
            )
    db.close()
    return len(chosen)


def fresh_mix(story: Path, target: Path, n: int, fraction: float, seed: int) -> int:
    """A new harvest at `target`: the demo's question about `n` words it never asked or
    tests on, answered by the teacher in-process as its gateway would (bfloat16, temperature
    1, the demo's answer length), a random `fraction` of them by the watermarked teacher.
    Returns how many answers are watermarked."""
    from stillroom.demo.story import DISTILL_TEMPLATE
    from stillroom.harvest.store import CallMeta, RunStore
    from stillroom.teachers.base import GenerationParams, TeacherRequest
    from stillroom.teachers.local import LocalTeacher
    from trace_match_demo import unseen_words

    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    rng = random.Random(seed)
    words = sorted(unseen_words(story))
    rng.shuffle(words)
    if len(words) < n:
        sys.exit(f"WordNet gives {len(words)} unseen words; lower --fresh")
    words = words[:n]
    marked = set(rng.sample(range(n), round(fraction * n)))
    params = GenerationParams(max_tokens=FULL.max_tokens, temperature=1.0, seed=0)
    asked = [
        TeacherRequest(messages=(("user", DISTILL_TEMPLATE.format(headword=w)),), params=params)
        for w in words
    ]
    plain = LocalTeacher.load(MODEL, dtype="bfloat16", batch_size=64)
    # The same loaded weights, sampling through the key: the gateway's watermarked teacher.
    marking = LocalTeacher(plain.lm, plain.tokenizer, name=plain.model, batch_size=64,
                           watermark=load_key(story / "watermark-key.json"))  # fmt: skip
    answers: dict[int, Any] = {}
    for teacher in (plain, marking):
        idx = [i for i in range(n) if (i in marked) == (teacher is marking)]
        answers.update(zip(idx, teacher.generate([asked[i] for i in idx]), strict=True))
    for got in answers.values():  # stored as an API harvest is: text, which training encodes
        got.prompt_token_ids = None
        for choice in got.choices:
            choice.token_ids = None
    store = RunStore(target / "harvest.sqlite")
    for i, request in enumerate(asked):
        body = request.canonical(MODEL)
        split = "validation" if i % 10 == 9 else "train"
        store.write_ok(CallMeta(f"{i:06d}", f"w{i}", 0, split, body, {}), answers[i], 0.0)
    store.close()
    return len(marked)


def reading_texts(story: Path, n: int) -> list[str]:
    """The teacher's own unwatermarked answers to the last `n` held-out questions (in no
    harvest): what reading mode feeds the suspects. Made once, kept in the story folder."""
    path = story / f"read-texts-{n}.jsonl"
    if path.is_file():
        return [json.loads(x)["text"] for x in path.read_text().splitlines()]
    from stillroom.teachers.base import GenerationParams, TeacherRequest
    from stillroom.teachers.local import LocalTeacher

    rows = (story / "trace.jsonl").read_text().splitlines()
    questions = [json.loads(x)["question"] for x in rows]
    params = GenerationParams(max_tokens=FULL.max_tokens, temperature=1.0, seed=1)
    teacher = LocalTeacher.load(MODEL, dtype="bfloat16", batch_size=16)
    asked = [TeacherRequest(messages=(("user", q),), params=params) for q in questions[-n:]]
    texts = [c.choices[0].text for c in teacher.generate(asked)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tmp.replace(path)
    return texts


def read(student: Path, texts: list[str], key: Any, tokenizer: Any, budget: int) -> dict[str, Any]:
    r = read_mode_test(str(student), texts, key, tokenizer, budget=budget, target_p=1e-6)
    return {"texts_read": r.queries, "p_value": r.p_value, "green_rate": round(r.green_rate, 4),
            "tuples": r.tuples_scored}  # fmt: skip


def mass(student: Path, texts: list[str], key: Any, tokenizer: Any, teacher: Any) -> dict[str, Any]:
    r = mass_test(str(student), texts, key, tokenizer, budget=len(texts), baseline_model=teacher)
    return {"texts_read": r.queries, "z": round(r.z, 3), "p_value": r.p_value,
            "p_bound": r.p_bound, "green_mass": round(r.green_mass, 4),
            "teacher_green_mass": round(r.baseline_green_mass or 0.0, 4)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--story", type=Path, default=Path("runs/story"))
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--budget", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--reuse", action="store_true", help="keep a student this script trained before"
    )
    ap.add_argument(
        "--fresh",
        type=int,
        default=0,
        help="instead of mixing the demo's harvests, harvest this many new questions "
        "in-process, the watermarked share answered with the demo's key",
    )
    ap.add_argument("--steps", type=int, default=0, help="training steps (default: the demo's)")
    ap.add_argument("--read-texts", type=int, default=300, help="texts for reading mode")
    ap.add_argument(
        "--build-only", action="store_true", help="train the student, skip the tests (for "
        "benchmarks/trace_served.py)",
    )  # fmt: skip
    args = ap.parse_args()
    story = args.story
    if not (story / "story.json").is_file():
        sys.exit(f"{story}: no finished demo here; run `stillroom demo` first")
    name = f"mixed{round(100 * args.fraction)}" + (f"-fresh{args.fresh}" if args.fresh else "")
    name += f"-s{args.steps}" if args.steps else ""  # e.g. mixed10-s240, beside the demo's
    done = story / name / "mixed.json"
    if args.reuse and done.is_file() and (story / name / "student").is_dir():
        swapped, train_s = json.loads(done.read_text())["swapped"], 0.0
    else:
        if args.fresh:
            swapped = fresh_mix(story, story / name, args.fresh, args.fraction, args.seed)
        else:
            swapped = mix(story, story / name, args.fraction, args.seed)
        scale = replace(FULL, train_steps=args.steps or FULL.train_steps)
        cfg = _harvest_config(story, name, "http://unused/v1", scale, MODEL)
        start = time.perf_counter()
        train(cfg, quiet=True)
        train_s = time.perf_counter() - start
        done.write_text(json.dumps({"swapped": swapped, "seed": args.seed}))
    if args.build_only:
        print(json.dumps({"student": str(story / name / "student"), "swapped": swapped,
                          "train_s": round(train_s, 1)}))  # fmt: skip
        return
    prompts = [json.loads(x)["question"] for x in (story / "trace.jsonl").read_text().splitlines()]
    key, tokenizer = load_key(story / "watermark-key.json"), load_tokenizer()
    result = radioactivity_test(
        LocalSuspect(str(story / name / "student")),
        prompts,
        key,
        tokenizer,
        budget=args.budget,
        target_p=1e-6,
        max_tokens=FULL.max_tokens,
    )
    found = asdict(result)
    texts = reading_texts(story, args.read_texts)
    reading = {
        n: read(story / d / "student", texts, key, tokenizer, args.budget)
        for n, d in (("mixed", name), ("all_watermarked", "distiller"), ("none", "control"))
    }
    from stillroom.teachers.local import LocalTeacher

    teacher = LocalTeacher.load(MODEL, batch_size=8)  # the baseline: never saw the watermark
    by_mass = {
        n: mass(story / d / "student", texts, key, tokenizer, teacher)
        for n, d in (("mixed", name), ("all_watermarked", "distiller"), ("none", "control"))
    }
    base = {
        n: json.loads((story / f"trace-{n}.json").read_text()) for n in ("distiller", "control")
    }
    print(
        json.dumps(
            {
                "benchmark": "trace_mixed",
                "watermarked_fraction": args.fraction,
                "answers_watermarked": swapped,
                "train_s": round(train_s, 1),
                "queries": found["queries"],
                "p_value": found["p_value"],
                "green_rate": round(found["green_rate"], 4),
                "stopped": found["stopped"],
                "reading_mode": reading,
                "mass_mode": by_mass,
                "mass_p_value": by_mass["mixed"]["p_value"],
                "baseline_all_watermarked": {
                    "queries": base["distiller"]["queries"],
                    "p_value": base["distiller"]["p_value"],
                },
                "baseline_none_watermarked": {
                    "queries": base["control"]["queries"],
                    "p_value": base["control"]["p_value"],
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
