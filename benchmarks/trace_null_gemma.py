"""Trace under the null at Gemma scale: the demo's students scored against keys they never saw.

Takes a finished `stillroom demo` folder. Both students (the rival, trained on answers
watermarked with the demo's key, and the control, trained on unwatermarked answers) answer
`--queries` of the held-out trace questions once; their answers are scored exactly as
`radioactivity_test` scores them (distinct (previous token, token) pairs, prompt pairs
skipped, Gemma's tokenizer) against `--keys` random keys of the demo key's shape. Neither
student saw any of these keys, so a calibrated test gives uniform p-values for both; the
demo's own key, scored on the same answers, is printed beside them.

    python benchmarks/trace_null_gemma.py [--story runs/story] [--keys 200] [--queries 300]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stillroom.runtime.loading import load_tokenizer
from stillroom.trace.radioactivity import TupleScore
from stillroom.trace.suspects import LocalSuspect
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey, load_key
from trace_calibration import summary


def scored(key: WatermarkKey, prompt_ids: list[list[int]], answer_ids: list[list[int]]) -> Any:
    score = TupleScore(GreenList(key))
    for ids in prompt_ids:
        score.exclude(ids)
    for ids in answer_ids:
        score.add(ids)
    return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--story", type=Path, default=Path("runs/story"))
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    story = args.story
    if not (story / "story.json").is_file():
        sys.exit(f"{story}: no finished demo here; run `stillroom demo` first")
    ours = load_key(story / "watermark-key.json")
    tok = load_tokenizer()
    lines = (story / "trace.jsonl").read_text().splitlines()
    asked = [json.loads(x)["question"] for x in lines[: args.queries]]
    prompt_ids = tok(asked, add_special_tokens=False)["input_ids"]
    out: dict[str, Any] = {"benchmark": "trace_null_gemma", "keys": args.keys}
    for name in ("control", "distiller"):
        suspect = LocalSuspect(str(story / name / "student"))
        answers = suspect.answer(asked, max_tokens=args.max_tokens, temperature=0.8, seed=7)
        answer_ids = tok(answers, add_special_tokens=False)["input_ids"]
        green, n = [], []
        for i in range(args.keys):
            secret = np.random.default_rng(20_000 + i).bytes(32)
            key = WatermarkKey(secret, ours.gamma, ours.delta, ours.context_width)
            s = scored(key, prompt_ids, answer_ids)
            green.append(s.green)
            n.append(s.scored)
        own = scored(ours, prompt_ids, answer_ids)
        found = summary(green, n, seed=1)
        out[name] = found | {
            "share_p_at_most_1pct": found["frac_p_le_0.01"],  # a key without dots for tables
            "demo_key_p": own.p_value(),
            "demo_key_green_rate": own.green / max(own.scored, 1),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
