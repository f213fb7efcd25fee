"""Power of the trace's tests on students built outside `stillroom train`, and their null.

Reads what `benchmarks/recipe_students.py` built under runs/recipes: the key, the held-out
texts and the students (each recipe trained on watermarked answers, and a control trained
the same way on unwatermarked ones). For every student, through the library's own tests:

- mass (open weights): the student reads the unwatermarked held-out texts, scored net of
  the teacher (read once; its distributions are reused for every student). p, Chernoff
  bound and z after n texts, for growing n; the reads of successive slices are merged.
- null: the mass weights do not depend on the key, so each student's weights at the largest
  n are also scored under `--keys` fresh random keys. None of those keys ever marked
  anything, so the pooled p-values must be uniform: KS p-value against the uniform and the
  share at or below 0.01 (about 1%).
- read: `read_mode_test` on the watermarked held-out texts, p at each of its looks.
- generate: `radioactivity_test` asking a `LocalSuspect`, only for the students named by
  `--generate` (it is the expensive one), with queries per CPU-minute.
- api_mass (only an API): the student behind a real `stillroom serve` gateway; its top-20
  log-probs on the same unwatermarked texts (completions, echo), net of the teacher's top 20,
  through `api_mass_test`; p times the looks taken, as `stillroom trace` reports it. Its
  null is shown by the controls (`--no-api` skips it).
- served, api_served: the served-answer test (`benchmarks/recipe_served.py`): does the
  student find the watermarked answers it may have trained on likelier than fresh twins of
  each, net of the teacher; with open weights, and through the served student's prompt
  log-probs. Once `recipe_students.py harvest replay` has built the twins.

JSON to stdout and runs/recipes/power.json, then a table: p at the largest n per student
and test, "caught" when p < 1e-6.

    PYTHONPATH=src .venv/bin/python benchmarks/trace_recipes.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.trace.mass import merge

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers
from recipe_served import ServedPairs, api_served_curve, load_pairs, served_curve, served_null
from served_student import served
from trace_mass_null import calibration

OUT = Path("runs/recipes")
CAUGHT_P = 1e-6


@dataclass
class Context:
    """What every test of a student reads: the key, the teacher's tokenizer, the texts."""

    key: Any
    tokenizer: Any
    plain_texts: list[str]  # unwatermarked held-out answers: mass
    marked_texts: list[str]  # watermarked held-out answers: reading
    prompts: list[str]  # what generating mode asks
    sizes: list[int]  # mass: numbers of texts at which p is reported
    teacher_reads: list[tuple[Any, Any]]  # the teacher's (Weights, sequences) per slice
    queries: int
    max_tokens: int
    pairs: ServedPairs | None = None  # the served-answer test's pairs
    loaded_teacher: Any = None

    def teacher(self) -> Any:
        """The teacher, loaded once: the API test's baseline at the positions it reads."""
        if self.loaded_teacher is None:
            from stillroom.teachers.local import LocalTeacher

            self.loaded_teacher = LocalTeacher.load("gemma-3-270m", batch_size=8)
        return self.loaded_teacher


# ---- merging reads (a small helper the library's mass module could offer) -----------------


def _pack(rows: np.ndarray) -> np.ndarray:
    """One int64 per row of token ids (each below 2^20), ordered as the rows are."""
    packed = np.zeros(len(rows), dtype=np.int64)
    for j in range(rows.shape[1]):
        packed = (packed << 20) | rows[:, j]
    return packed


def slices(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """[(0, n1), (n1, n2), ...]: the texts each successive read adds."""
    bounds = [0, *sizes]
    return list(pairwise(bounds))


# ---- the tests ----------------------------------------------------------------------------


def read_teacher(
    texts: list[str], sizes: Sequence[int], tokenizer: Any, key: Any, cache: Path
) -> tuple[list[Any], float]:
    """The teacher's reads of each slice of the mass texts (each cached on its own, so more
    texts later reuse them), refused if the texts carry the key; and the seconds spent."""
    from stillroom.teachers.local import LocalTeacher
    from stillroom.trace.mass import read_distributions, refuse_marked_texts
    from stillroom.watermark.greenlist import GreenList

    teacher = None
    reads, seconds = [], 0.0
    for lo, hi in slices(sizes):
        path = cache / f"teacher-{lo}-{hi}.pkl"
        if not path.is_file():
            start = time.perf_counter()
            teacher = teacher or LocalTeacher.load("gemma-3-270m", batch_size=8)
            read = read_distributions(teacher, texts[lo:hi], tokenizer, key.context_width)
            save_pickle(path, {"read": read, "seconds": time.perf_counter() - start})
        kept = load_pickle(path)
        reads.append(kept["read"])
        seconds += kept["seconds"]
    refuse_marked_texts([s for _, seqs in reads for s in seqs], GreenList(key))
    return reads, seconds


def mass_curve(model: Any, ctx: Context) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """p, bound and z after each number of texts; (rows, c) at the largest, for the null."""
    from stillroom.trace.mass import combine, green_bits, read_distributions, score
    from stillroom.watermark.greenlist import GreenList

    green_list = GreenList(ctx.key)
    ours = base = None
    curve = []
    start = time.perf_counter()
    for (lo, hi), (teacher_w, seqs) in zip(slices(ctx.sizes), ctx.teacher_reads, strict=True):
        read, _ = read_distributions(
            model, ctx.plain_texts[lo:hi], ctx.tokenizer, green_list.width, positions_of=seqs
        )
        ours, base = merge(ours, read), merge(base, teacher_w)
        rows, c = combine(ours, base)
        tail = score(c, green_bits(green_list, rows), ctx.key.gamma)
        curve.append(
            {
                "n": hi,
                "p": tail.p_value,
                "p_bound": tail.p_bound,
                "z": round(tail.z, 3),
                "positions": ours.positions,
                "pairs": len(rows),
            }
        )
    return {"curve": curve, "seconds": round(time.perf_counter() - start, 1)}, (rows, c)


def read_curve(folder: str, model: Any, ctx: Context) -> dict[str, Any]:
    from stillroom.trace.reading import read_mode_test

    start = time.perf_counter()
    result = read_mode_test(
        folder,
        ctx.marked_texts,
        ctx.key,
        ctx.tokenizer,
        budget=len(ctx.marked_texts),
        target_p=0.0,
        model=model,
    )
    curve = look_curve(result.looks)
    return {"curve": curve, "seconds": round(time.perf_counter() - start, 1)}


def look_curve(looks: Sequence[Any]) -> list[dict[str, Any]]:
    """A sequential test's looks as a p-curve."""
    return [
        {
            "n": look.queries,
            "p": look.p_adjusted,
            "p_raw": look.p_value,
            "tuples": look.tuples_scored,
            "green": look.green,
        }
        for look in looks
    ]


def generate_curve(folder: str, ctx: Context) -> dict[str, Any]:
    from stillroom.trace.radioactivity import radioactivity_test
    from stillroom.trace.suspects import LocalSuspect

    suspect = LocalSuspect(folder)
    wall, cpu = time.perf_counter(), time.process_time()
    result = radioactivity_test(
        suspect,
        ctx.prompts,
        ctx.key,
        ctx.tokenizer,
        budget=ctx.queries,
        target_p=0.0,
        max_tokens=ctx.max_tokens,
    )
    cpu_min = (time.process_time() - cpu) / 60
    curve = look_curve(result.looks)
    return {
        "curve": curve,
        "seconds": round(time.perf_counter() - wall, 1),
        "cpu_minutes": round(cpu_min, 2),
        "queries_per_cpu_minute": round(result.queries / cpu_min, 2) if cpu_min else None,
        "max_tokens": ctx.max_tokens,
    }


# ---- through an API -----------------------------------------------------------------------

API_TOP_K = 20  # what OpenAI-compatible APIs return at most (vLLM's and ours)


def api_mass_curve(entry: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Mass mode with only an API: the served student's top-20 log-probs on our unwatermarked
    texts (completions, echo), net of the teacher's top 20 at the same positions; the
    sequential test's looks (p times the looks taken, as `stillroom trace` reports it)."""
    from stillroom.trace.api_mass import LogprobsApi, api_mass_test

    start = time.perf_counter()
    with served(entry["folder"]) as (url, api_key, model):
        api = LogprobsApi(url, model, api_key, ctx.tokenizer, k=API_TOP_K)
        result = api_mass_test(
            api, ctx.key, ctx.tokenizer, texts=ctx.plain_texts, baseline_model=ctx.teacher(),
            baseline="teacher", budget=len(ctx.plain_texts), target_p=0.0,
        )  # fmt: skip
    curve = [
        {"n": look.queries, "p": look.p_adjusted, "p_raw": look.p_value, "z": round(look.z, 3)}
        for look in result.looks
    ]
    return {"curve": curve, "top_k": API_TOP_K, "seconds": round(time.perf_counter() - start, 1)}


def served_test(entry: dict[str, Any], ctx: Context) -> dict[str, Any]:
    assert ctx.pairs is not None  # add_tests runs it only then
    return served_curve(entry["folder"], ctx.pairs, ctx.teacher())


def api_served_test(entry: dict[str, Any], ctx: Context) -> dict[str, Any]:
    assert ctx.pairs is not None
    return api_served_curve(entry["folder"], ctx.pairs, ctx.teacher())


# Tests run on a student whose cached results lack them: name -> function(entry, Context).
# Those named api_* need only an API; the served ones need the replay harvest.
ADDED_TESTS: dict[str, Callable[[dict[str, Any], Context], dict[str, Any]]] = {
    "api_mass": api_mass_curve,
    "served": served_test,
    "api_served": api_served_test,
}


# ---- the null -----------------------------------------------------------------------------


def null_p_values(
    weights: dict[str, tuple[np.ndarray, np.ndarray]], keys: int
) -> dict[str, list[float]]:
    """Every student's mass p-value under `keys` fresh keys (none of which ever marked text).

    The green bits of a key are computed once on the union of every student's rows and
    looked up for each: the same bits `green_bits` gives each student's rows alone. The
    union's contexts are grouped once, not once per key.
    """
    from stillroom.trace.mass import score
    from stillroom.watermark.greenlist import GreenList, group_contexts
    from stillroom.watermark.key import generate_key

    union = np.unique(np.concatenate([_pack(rows) for rows, _ in weights.values()]))
    w = next(iter(weights.values()))[0].shape[1]
    union_rows = np.stack([(union >> (20 * (w - 1 - j))) & ((1 << 20) - 1) for j in range(w)], 1)
    where = {name: np.searchsorted(union, _pack(rows)) for name, (rows, _) in weights.items()}
    contexts, context_of = group_contexts(union_rows[:, : w - 1])
    tokens = union_rows[:, w - 1]
    p: dict[str, list[float]] = {name: [] for name in weights}
    for _ in range(keys):
        key = generate_key(context_width=w - 1)
        green = GreenList(key).green_grouped(contexts, context_of, tokens)
        for name, (_, c) in weights.items():
            p[name].append(score(c, green[where[name]], key.gamma).p_value)
    return p


def null_summary(p: dict[str, list[float]], keys: int, seconds: float) -> dict[str, Any]:
    """Pooled and per-student calibration of the null p-values."""
    return {
        "keys": keys,
        "students": len(p),
        **calibration([x for ps in p.values() for x in ps]),
        "per_student": {name: calibration(ps) for name, ps in p.items()},
        "seconds": round(seconds, 1),
    }


# ---- the run ------------------------------------------------------------------------------


def save_pickle(path: Path, value: Any) -> None:
    """Write whole or not at all: a rerun trusts any file it finds (results are cached so
    a rerun resumes, and processes can share the students)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(value))
    tmp.rename(path)


def load_pickle(path: Path) -> Any:
    return pickle.loads(path.read_bytes())


def texts(out: Path, name: str, field: str = "answer") -> list[str]:
    path = out / "harvest" / name
    return [json.loads(line)[field] for line in path.read_text().splitlines() if line.strip()]


def run_student(entry: dict[str, Any], ctx: Context, generate: bool) -> tuple[dict[str, Any], Any]:
    from stillroom.teachers.local import LocalTeacher

    folder = entry["folder"]
    model = LocalTeacher.load(folder, batch_size=8)
    found: dict[str, Any] = {k: entry[k] for k in ("recipe", "answers", "epochs", "marked")}
    found["mass"], weights = mass_curve(model, ctx)
    print(f"{entry['name']} mass {found['mass']['curve'][-1]}", flush=True)
    found["read"] = read_curve(folder, model, ctx)
    print(f"{entry['name']} read {found['read']['curve'][-1]}", flush=True)
    del model
    if generate:
        found["generate"] = generate_curve(folder, ctx)
        print(f"{entry['name']} generate {found['generate']['curve'][-1]}", flush=True)
    return found, weights


def add_tests(found: dict[str, Any], entry: dict[str, Any], ctx: Context, api: bool) -> bool:
    """Run the added tests a student's cached results lack (API ones if `api`; served ones
    once the replays exist); whether any ran."""
    missing = [
        test
        for test in ADDED_TESTS
        if test not in found
        and (api or not test.startswith("api_"))
        and (ctx.pairs is not None or "served" not in test)
    ]
    for test in missing:
        found[test] = ADDED_TESTS[test](entry, ctx)
        print(f"{entry['name']} {test} {found[test]['curve'][-1]}", flush=True)
    return bool(missing)


def table(students: dict[str, dict[str, Any]]) -> str:
    tests = ["mass", "read", "generate", *ADDED_TESTS]
    lines = [f"{'student':32}" + "".join(f"{t:>26}" for t in tests)]
    for name, found in students.items():
        cells = []
        for t in tests:
            if t not in found:
                cells.append(f"{'-':>26}")
                continue
            last = found[t]["curve"][-1]
            verdict = "caught" if last["p"] < CAUGHT_P else ""
            cells.append(
                f"{'n=' + str(last['n']) + ' p=' + format(last['p'], '.2g') + ' ' + verdict:>26}"
            )
        lines.append(f"{name:32}" + "".join(cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two students, few texts and keys")
    ap.add_argument("--sizes", default="50,100,200,500,1000,2000")
    ap.add_argument("--read-texts", type=int, default=300)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--generate", default="frozen-250x1-marked,frozen-250x1-control")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument(
        "--prompts",
        choices=["default", "held"],
        default="default",
        help="generating mode asks the trace's default questions, or held-out "
        "prompts of the harvest's kind",
    )
    ap.add_argument("--students", help="comma-separated names (default: every student)")
    ap.add_argument(
        "--no-api", dest="api", action="store_false",
        help="skip the tests through a served API (api_mass, api_served)",
    )  # fmt: skip
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT, help="what recipe_students.py built")
    ap.add_argument("--json", default="power.json", help="file name under --out")
    ap.add_argument(
        "--teacher-only",
        action="store_true",
        help="only read (and cache) the teacher: other processes can then share the students",
    )
    args = ap.parse_args()
    out = args.out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from stillroom.runtime.loading import load_tokenizer
    from stillroom.trace.options import DEFAULT_QUESTIONS
    from stillroom.watermark.key import load_key

    wall = time.perf_counter()
    manifest: dict[str, dict[str, Any]] = json.loads((out / "manifest.json").read_text())
    names = args.students.split(",") if args.students else list(manifest)
    generate = set(args.generate.split(",")) if args.generate else set()
    plain = texts(out, "held-plain.jsonl")
    marked = texts(out, "held-marked.jsonl")[: args.read_texts]
    sizes = [int(n) for n in args.sizes.split(",")]
    keys, queries = args.keys, args.queries
    if args.quick:
        names = [n for n in names if n.startswith("frozen-")][:2] or names[:2]
        sizes, marked, keys, queries = [20, 40], marked[:40], 20, 16
    sizes = [n for n in sizes if n < len(plain)] + [min(len(plain), max(sizes))]
    sizes = sorted(set(sizes))
    if args.prompts == "default":
        rows = DEFAULT_QUESTIONS.read_text().splitlines()
        prompts = [json.loads(r)["question"] for r in rows if r.strip()]
    else:
        prompts = texts(out, "held-plain.jsonl", "prompt")[max(sizes) :]
    key = load_key(out / "key.json")
    tokenizer = load_tokenizer()
    cache = out / ("trace-quick" if args.quick else "trace")
    cache.mkdir(exist_ok=True)
    teacher_reads, teacher_s = read_teacher(plain, sizes, tokenizer, key, cache)
    if args.teacher_only:
        return
    ctx = Context(
        key,
        tokenizer,
        plain,
        marked,
        prompts,
        sizes,
        teacher_reads,
        queries,
        args.max_tokens,
        load_pairs(out),
    )
    students: dict[str, dict[str, Any]] = {}
    weights = {}
    for name in names:
        done = cache / f"{name}.pkl"
        if not done.is_file():
            found, (rows, c) = run_student(manifest[name], ctx, name in generate)
            save_pickle(done, {"found": found, "rows": rows, "c": c})
        kept = load_pickle(done)
        if add_tests(kept["found"], manifest[name], ctx, args.api):
            save_pickle(done, kept)
        students[name], weights[name] = kept["found"], (kept["rows"], kept["c"])
    null = None  # --keys 0: a worker's share of the students, no null
    if keys:
        # Each student's null p-values are cached too: each is a sample of fresh keys of its
        # own, so students added later pool with the earlier ones.
        start = time.perf_counter()
        nulls = {n: load_pickle(cache / f"{n}.null.pkl") for n in names
                 if (cache / f"{n}.null.pkl").is_file()}  # fmt: skip
        nulls = {n: ps for n, ps in nulls.items() if len(ps) >= keys}
        todo = {n: weights[n] for n in names if n not in nulls}
        if todo:
            for name, ps in null_p_values(todo, keys).items():
                save_pickle(cache / f"{name}.null.pkl", ps)
                nulls[name] = ps
        null = null_summary({n: nulls[n][:keys] for n in names}, keys, time.perf_counter() - start)
    result = {
        "benchmark": "trace_recipes",
        "quick": args.quick,
        "key_id": key.key_id,
        "mass_texts": max(sizes),
        "read_texts": len(marked),
        "generate_prompts": args.prompts,
        "caught_below_p": CAUGHT_P,
        "students": students,
        "null": null,
        "served_null": {
            test: calibration(ps)
            for test in ("served", "api_served")
            if (ps := served_null(students, test))
        },
        "seconds": {
            "teacher_read": round(teacher_s, 1),
            "total": round(time.perf_counter() - wall, 1),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if null is not None:  # the whole run's file, not a worker's
        (out / ("power-quick.json" if args.quick else args.json)).write_text(text + "\n")
    print(table(students))
    if null is not None:
        print(
            f"null: {null['runs']} p-values ({keys} keys x {len(weights)} students), "
            f"KS p = {null['ks_p']:.3g}, share p <= 0.01 = {null['share_p_at_most_1pct']:.3f}"
        )


if __name__ == "__main__":
    main()
