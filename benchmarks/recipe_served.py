"""The served-answer test on the recipe students (`benchmarks/trace_recipes.py`).

The harvest's first watermarked train answers are what a gateway served the distiller; the
replay harvest holds a fresh twin of each (the same teacher, key and prompt, another seed),
which no student saw. A student that trained on the served answers finds them likelier than
their twins; a control, trained on other draws of the same prompts, cannot tell the two
apart. D = the suspect's mean log-prob per answer token of the served answer minus its
twin's, net of the teacher's (which cancels how likely each answer is in itself), and the
library's paired sign test on sum(D) (`stillroom.trace.served.paired_test`). Read with open
weights, or through an API's prompt log-probs (completions, echo) as `stillroom trace
--served-by likelihood` reads a URL.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Messages = tuple[tuple[str, str], ...]


@dataclass
class ServedPairs:
    """Served answers and their twins, with the teacher's D (read once, lazily)."""

    messages: list[Messages]
    served: list[str]
    twins: list[str]
    sizes: list[int]  # numbers of pairs at which p is reported
    teacher_d: np.ndarray | None = field(default=None, repr=False)

    def baseline(self, teacher: Any) -> np.ndarray:
        from stillroom.trace.served import answer_logprobs

        if self.teacher_d is None:
            self.teacher_d = answer_logprobs(teacher, self.messages, self.served) - answer_logprobs(
                teacher, self.messages, self.twins
            )
        return self.teacher_d


def load_pairs(out: Path, sizes: tuple[int, ...] = (25, 50, 100, 250)) -> ServedPairs | None:
    """The pairs under `out`/harvest, or None before `recipe_students.py harvest replay`."""
    replay = out / "harvest" / "replay-marked.jsonl"
    if not replay.is_file():
        return None
    twins = [json.loads(line) for line in replay.read_text().splitlines() if line.strip()]
    train = (out / "harvest" / "train-marked.jsonl").read_text().splitlines()
    served = [json.loads(line) for line in train[: len(twins)]]
    if [r["prompt"] for r in served] != [r["prompt"] for r in twins]:
        raise SystemExit(f"{replay}: its prompts are not the first train prompts; rebuild it")
    n = len(twins)
    return ServedPairs(
        messages=[(("user", r["prompt"]),) for r in served],
        served=[r["answer"] for r in served],
        twins=[r["answer"] for r in twins],
        sizes=sorted({s for s in sizes if s < n} | {n}),
    )


def curve(d: np.ndarray, sizes: list[int]) -> list[dict[str, Any]]:
    """The paired test on the first n pairs, for each n."""
    from stillroom.trace.served import paired_test

    out = []
    for n in sizes:
        tail = paired_test(d[:n])
        out.append({"n": n, "p": tail.p_value, "p_bound": tail.p_bound, "z": round(tail.z, 3)})
    return out


def served_curve(folder: str, pairs: ServedPairs, teacher: Any) -> dict[str, Any]:
    """Open weights: the student reads every served answer and twin after its prompt."""
    from stillroom.teachers.local import LocalTeacher
    from stillroom.trace.served import answer_logprobs

    start = time.perf_counter()
    model = LocalTeacher.load(folder, batch_size=8)
    d = answer_logprobs(model, pairs.messages, pairs.served) - answer_logprobs(
        model, pairs.messages, pairs.twins
    )
    d = d - pairs.baseline(teacher)
    return {
        "curve": curve(d, pairs.sizes),
        "d": d.tolist(),
        "seconds": round(time.perf_counter() - start, 1),
    }


def api_served_curve(folder: str, pairs: ServedPairs, teacher: Any) -> dict[str, Any]:
    """Only an API: the same D from the served student's prompt log-probs."""
    from served_student import api_logprobs

    start = time.perf_counter()
    tok = teacher.tokenizer  # the prompt is rendered with the teacher's chat template
    lp = api_logprobs(folder, tok, pairs.messages, {"served": pairs.served, "twins": pairs.twins})
    d = lp["served"] - lp["twins"]
    d = d - pairs.baseline(teacher)
    return {
        "curve": curve(d, pairs.sizes),
        "d": d.tolist(),
        "seconds": round(time.perf_counter() - start, 1),
    }


def served_null(students: dict[str, dict[str, Any]], test: str, size: int = 10) -> list[float]:
    """The test's p-values on runs of `size` pairs of every control (none trained on any
    served answer): uniform if the test is calibrated."""
    from stillroom.trace.served import paired_test

    p = []
    for found in students.values():
        if found.get("marked") or "d" not in found.get(test, {}):
            continue
        d = np.asarray(found[test]["d"])
        p += [paired_test(d[i : i + size]).p_value for i in range(0, len(d) - size + 1, size)]
    return p
