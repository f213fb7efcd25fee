"""Mass mode under the null at Gemma scale: models that never saw a key, scored against it.

Takes a finished `stillroom demo` folder (and the dictionary models of
`benchmarks/trace_match_demo.py`, when present). Each null suspect reads the same
unwatermarked teacher answers that `benchmarks/trace_mixed.py` uses, once; its green-mass
score is then computed against `--keys` random keys of the demo key's shape, with no baseline
and with the teacher as baseline. None of these models saw any of the keys, so the p-values
must be uniform (Kolmogorov-Smirnov) with about 1% below 0.01. The null suspects:

- control: the demo's student trained on the teacher's unwatermarked answers to the prompts
  the rival harvested (the closest null there is: same prompts, same recipe);
- dict-indep: a model trained from scratch on dictionary definitions, never near our teacher.

The demo key's own p-value is printed beside them for the control and for the rival student
(all its training answers watermarked), which shows the power the calibration is paid with.

    python benchmarks/trace_mass_null.py [--story runs/story] [--keys 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stillroom.runtime.loading import load_tokenizer
from stillroom.teachers.local import LocalTeacher
from stillroom.trace.mass import Weights, combine, green_bits, read_distributions, score
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey, load_key
from trace_mixed import reading_texts


def p_values(rows: np.ndarray, c: np.ndarray, keys: list[WatermarkKey]) -> list[float]:
    return [score(c, green_bits(GreenList(k), rows), k.gamma).p_value for k in keys]


def calibration(p: list[float]) -> dict[str, Any]:
    arr = np.asarray(p)
    return {
        "runs": len(arr),
        "ks_p": float(stats.kstest(arr, "uniform").pvalue),
        "share_p_at_most_1pct": float(np.mean(arr <= 0.01)),
        "share_p_at_most_5pct": float(np.mean(arr <= 0.05)),
        "min_p": float(arr.min()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--story", type=Path, default=Path("runs/story"))
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--read-texts", type=int, default=300)
    args = ap.parse_args()
    story = args.story
    if not (story / "story.json").is_file():
        sys.exit(f"{story}: no finished demo here; run `stillroom demo` first")
    ours = load_key(story / "watermark-key.json")
    tok = load_tokenizer()
    texts = reading_texts(story, args.read_texts)
    keys = [
        WatermarkKey(np.random.default_rng(30_000 + i).bytes(32), ours.gamma, ours.delta, 1)
        for i in range(args.keys)
    ]
    suspects = {"control": story / "control" / "student"}
    if (story / "match" / "dict-indep" / "student").is_dir():
        suspects["dict-indep"] = story / "match" / "dict-indep" / "student"
    suspects["rival"] = story / "distiller" / "student"  # power reference, not a null
    teacher = LocalTeacher.load("gemma-3-270m", batch_size=8)
    out: dict[str, Any] = {"benchmark": "trace_mass_null", "keys": args.keys,
                           "texts": len(texts)}  # fmt: skip
    pooled: list[float] = []
    start = time.perf_counter()
    for name, folder in suspects.items():
        model = LocalTeacher.load(str(folder), batch_size=8)
        read, seqs = read_distributions(model, texts, tok, 1)
        base: Weights
        base, _ = read_distributions(teacher, texts, tok, 1, positions_of=seqs)
        for label, baseline in (("no_baseline", None), ("teacher_baseline", base)):
            rows, c = combine(read, baseline)
            tail = score(c, green_bits(GreenList(ours), rows), ours.gamma)
            found: dict[str, Any] = {"demo_key_z": round(tail.z, 3), "demo_key_p": tail.p_value,
                                     "demo_key_p_bound": tail.p_bound}  # fmt: skip
            if name != "rival":
                p = p_values(rows, c, keys)
                pooled += p
                found |= calibration(p)
            out[f"{name}_{label}"] = found
    out["pooled_nulls"] = calibration(pooled)
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
