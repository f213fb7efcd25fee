"""Output match in the demo setting: is Gemma named as the parent of the demo's students, and
no parent for a model that never saw Gemma's answers?

Takes a finished `stillroom demo` folder. Its two students learned from Gemma 3 270M's
answers to "What is a X? Answer in two sentences." (the rival through the watermarked
gateway, the control without the watermark), so Gemma is their parent.

The test needs more models than that, and Gemma is the one capable model that works offline
here. So the others are made here, all alike: small dictionary models trained from scratch
(random weights; Gemma's tokenizer, trimmed) to answer the same questions with WordNet's own
definitions, "A X is <definition>. ...". Five of them, same recipe, disjoint words and
different seeds:

- candidates (possible parents): gemma-3-270m, dict-a, dict-b;
- references (comparable models the suspects are known not to derive from): dict-r1, dict-r2;
- a third suspect, dict-indep: independent of every candidate, so the right verdict is "no
  parent".

No model here ever saw the questions asked in the test: they are the demo's held-out
questions, and their words are left out of the dictionaries. Every model answers them
greedily once; the test (stillroom.trace.match) is run per suspect on those answers.

What this does not show: references as capable as the parent. Against small dictionary
models, any fluent model derived from Gemma beats the references; the run shows the test
names the right parent among these candidates and no parent for an independent model.

    python benchmarks/trace_match_demo.py [--story runs/story] [--prompts 300]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stillroom.demo.story import DISTILL_TEMPLATE
from stillroom.harvest.store import CallMeta, RunStore
from stillroom.runtime.gemma import default_teacher_dir
from stillroom.tasks.wordnet import find_wordnet, parse_data_noun
from stillroom.teachers.base import Choice, Completion, GenerationParams, TeacherRequest, Usage
from stillroom.trace.match import compare, random_prompts
from stillroom.trace.suspects import LocalSuspect
from stillroom.train.trainer import encode_record, train

DICTS = ("dict-a", "dict-b", "dict-r1", "dict-r2", "dict-indep")
MAX_TOKENS = 32


def unseen_words(story: Path) -> dict[str, tuple[str, str]]:
    """WordNet nouns the demo neither harvested nor tests on: word -> (definition, its
    lexicographer category), common nouns with a short definition only."""
    asked = set()
    for name in ("distill.jsonl", "trace.jsonl"):
        for line in (story / name).read_text().splitlines():
            row = json.loads(line)
            asked.add(row.get("headword") or row["question"].split("What is a ")[1].split("?")[0])
    found: dict[str, tuple[str, str]] = {}
    for s in parse_data_noun(find_wordnet()):
        word = s.words[0].replace("_", " ")
        if s.instance or s.taxon or not s.definition or word in asked or word in found:
            continue
        if word.islower() and len(s.definition) <= 200:
            found[word] = (s.definition, s.lexname.split(".")[1])
    return found


def dictionary(story: Path, per_model: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """(question, answer) pairs for each dictionary model: disjoint words, none of them a
    word the demo asked about or will test on."""
    entries = {
        word: (
            DISTILL_TEMPLATE.format(headword=word),
            f"A {word} is {definition}. In a dictionary it is filed under {kind}.",
        )
        for word, (definition, kind) in unseen_words(story).items()
    }
    words = sorted(entries)
    random.Random(seed).shuffle(words)
    if len(words) < per_model * len(DICTS):
        sys.exit(f"WordNet gives {len(words)} usable words; lower --per-model")
    return {
        name: [entries[w] for w in words[i * per_model : (i + 1) * per_model]]
        for i, name in enumerate(DICTS)
    }


def write_store(run: Path, pairs: list[tuple[str, str]], tok: Any) -> None:
    """A run folder whose store holds `pairs` as a local harvest would (Gemma's token ids),
    so `stillroom train` reads them like any harvest."""
    if run.exists():  # a run stopped before its student was saved: start it again
        shutil.rmtree(run)
    run.mkdir(parents=True)
    store = RunStore(run / "harvest.sqlite")
    params = GenerationParams(max_tokens=64, temperature=0.0)
    for i, (question, answer) in enumerate(pairs):
        request = TeacherRequest(messages=(("user", question),), params=params)
        body = request.canonical("dictionary")
        p, c = encode_record(tok, body, answer, "stop")
        split = "validation" if i % 10 == 9 else "train"
        meta = CallMeta(f"{i:06d}", f"w{i}", 0, split, body, {})
        choice = Choice(0, answer, "stop", token_ids=c)
        store.write_ok(meta, Completion([choice], Usage(len(p), len(c)), "dictionary", 0.0,
                                        prompt_token_ids=p), 0.0)  # fmt: skip
    store.close()


def dictionary_config(root: Path, name: str, seed: int, steps: int) -> Any:
    from stillroom.config import validate_config

    prompts = root / "prompts.jsonl"  # the config wants a prompt source; the store is full
    prompts.write_text(json.dumps({"id": "w0", "question": "unused"}) + "\n")
    raw = {
        "name": name,
        "runs_dir": str(root),
        "prompts": {"path": str(prompts), "field": "question", "id_field": "id"},
        "teacher": {"kind": "local", "model": str(default_teacher_dir())},
        "split": {"train": 0.9, "validation": 0.1, "test": 0.0, "seed": 0},
        "train": {"objective": "sequence", "alpha": 1.0, "precision": "bf16",
                  "student": {"init": "config", "layers": 4, "hidden_size": 256, "heads": 4,
                              "kv_heads": 1, "intermediate_size": 1024, "seed": seed,
                              "trim_vocab": True},
                  "max_steps": steps, "batch_tokens": 4096, "lr": 2e-3, "warmup_steps": 20,
                  "eval_every": 100, "checkpoint_every": 1000, "early_stopping_patience": None},
    }  # fmt: skip
    return validate_config(raw, f"trace_match_demo ({name})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--story", type=Path, default=Path("runs/story"))
    ap.add_argument("--prompts", type=int, default=300, help="questions every model answers")
    ap.add_argument("--per-model", type=int, default=3000, help="words in each dictionary")
    ap.add_argument("--steps", type=int, default=120, help="training steps of each dictionary")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    story = args.story
    if not (story / "story.json").is_file():
        sys.exit(f"{story}: no finished demo here; run `stillroom demo` first")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_teacher_dir())
    root = story / "match"
    timings: dict[str, float] = {}
    books = dictionary(story, args.per_model, args.seed)
    for i, name in enumerate(DICTS):
        if (root / name / "student").is_dir():
            continue
        start = time.perf_counter()
        write_store(root / name, books[name], tok)
        train(dictionary_config(root, name, args.seed + i, args.steps), quiet=True)
        timings[f"train {name}"] = round(time.perf_counter() - start, 1)

    pool = [json.loads(x)["question"] for x in (story / "trace.jsonl").read_text().splitlines()]
    prompts = random_prompts(pool, args.prompts, args.seed)
    folders = {
        "gemma-3-270m": default_teacher_dir(),
        "rival student": story / "distiller" / "student",
        "control student": story / "control" / "student",
        **{name: root / name / "student" for name in DICTS},
    }
    ids: dict[str, list[list[int]]] = {}
    samples: dict[str, str] = {}
    for name, folder in folders.items():
        start = time.perf_counter()
        texts = LocalSuspect(str(folder)).answer(
            prompts, max_tokens=MAX_TOKENS, temperature=0.0, seed=0
        )
        timings[f"answer {name}"] = round(time.perf_counter() - start, 1)
        ids[name] = [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
        samples[name] = texts[0]
    candidates = ("gemma-3-270m", "dict-a", "dict-b")
    references = ("dict-r1", "dict-r2")
    truth = {"rival student": "gemma-3-270m", "control student": "gemma-3-270m",
             "dict-indep": None}  # fmt: skip
    verdicts = {}
    for suspect, parent in truth.items():
        r = compare(
            ids[suspect],
            {n: ids[n] for n in candidates},
            {n: ids[n] for n in references},
            suspect_name=suspect,
            max_tokens=MAX_TOKENS,
        )
        verdicts[suspect] = {
            "true_parent": parent,
            "named_parent": r.parent,
            "right": r.parent == parent,
            "best_reference": r.best_reference,
            "candidates": [asdict(c) for c in r.candidates],
            "references": [asdict(c) for c in r.references],
        }
    rival = verdicts["rival student"]
    gemma = next(c for c in rival["candidates"] if c["name"] == "gemma-3-270m")
    best_ref = next(c for c in rival["references"] if c["name"] == rival["best_reference"])
    print(
        json.dumps(
            {
                "benchmark": "trace_match_demo",
                "suspects": len(verdicts),
                "right_verdicts": sum(v["right"] for v in verdicts.values()),
                "rival": {
                    "gemma_match_rate": round(gemma["match_rate"], 4),
                    "best_reference_match_rate": round(best_ref["match_rate"], 4),
                    "gemma_p_holm": gemma["p_holm"],
                },
                "prompts": len(prompts),
                "max_tokens": MAX_TOKENS,
                "alpha": 0.01,
                "verdicts": verdicts,
                "first_prompt": prompts[0],
                "first_answers": samples,
                "seconds": timings,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
