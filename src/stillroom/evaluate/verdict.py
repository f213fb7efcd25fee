"""Whether distilling paid, said before anything else.

A student can keep most of a teacher's score and still be the wrong choice: when a model of
its own architecture trained on the gold labels alone (the baseline) scores as well, the
teacher added nothing; when the teacher itself barely beats a trivial answer (always the
most common label, copying the input), "% of the teacher kept" is a share of nothing. So
the verdict compares, item by item on the same test set, the student with the baseline and
the teacher with the best trivial answer, each difference with a 95% paired bootstrap
interval, and the headline leads with whichever of these failed. The share of the teacher
kept is only ever shown beside the teacher's margin over the trivial answer and the
baseline's score. The speed it quotes is the low end (rounded down) of a 95% interval of
the speed ratio over this eval's timing rounds: each round gives every model a turn, one
right after another, so the ratio of their turns' rates is paired (an eval.json from before
rounds were paired falls back to the student's slowest pass over the teacher's fastest).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stillroom.evaluate.efficiency import MIN_ROUNDS

DRAWS = 2000  # bootstrap resamples of the test items
SEED = 0  # the same items give the same interval on every eval
# A teacher (or student) is clearly above a trivial answer when the interval of its margin
# lies above zero and the margin itself is at least this: accuracy 0-1, chrF 0-100.
MIN_MARGIN = {"accuracy": 0.05, "chrf": 5.0}


@dataclass
class Gap:
    """mean(a - b) over paired items, and its 95% bootstrap interval."""

    diff: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def paired_gap(a: np.ndarray, b: np.ndarray, *, draws: int = DRAWS, seed: int = SEED) -> Gap:
    """Percentile bootstrap of the mean per-item difference: items are resampled together,
    so what both models get right or wrong alike does not widen the interval."""
    d = np.asarray(a, float) - np.asarray(b, float)  # (N,)
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, draws, 250):  # (250, N) indices at a time: memory stays small
        idx = rng.integers(0, len(d), size=(min(250, draws - start), len(d)))
        means.append(d[idx].mean(axis=1))
    low, high = np.percentile(np.concatenate(means), [2.5, 97.5])
    return Gap(float(d.mean()), float(low), float(high))


def clearly_above(gap: Gap, metric: str) -> bool:
    return gap.low > 0 and gap.diff >= MIN_MARGIN.get(metric, 0.0)


def judge(
    per_item: Mapping[str, np.ndarray],
    trivial: Mapping[str, np.ndarray],
    scores: Mapping[str, float],
    metric: str,
) -> dict[str, Any]:
    """The verdict eval.json keeps. `per_item`: role -> (N,) per-item scores of teacher,
    student and (if trained) baseline; `trivial`: name -> (N,) per-item scores of a trivial
    answer, keyed as in eval.json's models; `scores`: key -> the figure shown for it."""
    floor = max(trivial, key=lambda name: scores[name])
    teacher_gap = paired_gap(per_item["teacher"], trivial[floor])
    out: dict[str, Any] = {
        "metric": metric,
        "n_items": len(per_item["teacher"]),
        "interval": f"95% paired bootstrap over the test items, {DRAWS} draws",
        "floor": floor,
        "teacher_over_floor": teacher_gap.as_dict(),
        "teacher_clear_of_floor": clearly_above(teacher_gap, metric),
    }
    if "student" in per_item:
        student_gap = paired_gap(per_item["student"], trivial[floor])
        out["student_over_floor"] = student_gap.as_dict()
        out["student_clear_of_floor"] = clearly_above(student_gap, metric)
    if "student" in per_item and "baseline" in per_item:
        gap = paired_gap(per_item["student"], per_item["baseline"])
        out["student_over_baseline"] = gap.as_dict()
        out["distillation_paid"] = gap.low > 0
    return out


@dataclass
class Speedup:
    ratio: float  # the student's speed over the teacher's
    low: float  # the conservative end the headline quotes
    high: float
    how: str  # in words, for the headline
    paired: bool  # an interval over paired rounds; else the slowest-over-fastest pairing

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def speedup(teacher: Mapping[str, Any], student: Mapping[str, Any]) -> Speedup | None:
    """The student's speed over the teacher's in this eval, with a 95% interval: the
    geometric mean of the per-round ratios of their turns' rates (turns adjacent in time, so
    a load that lasts longer than a round slows both), and Student's t on the log ratios.
    The interval is this eval's timing noise, not the spread between evals on a machine
    whose load changes: another eval, under another load, can land outside it."""
    t, s = teacher.get("efficiency") or {}, student.get("efficiency") or {}
    tr, sr = t.get("turn_rates") or [], s.get("turn_rates") or []
    n = min(len(tr), len(sr))
    if n >= MIN_ROUNDS:  # fewer than eval times give no interval worth quoting
        from scipy.stats import t as student_t

        logs = np.log(np.asarray(sr[:n], dtype=float) / np.asarray(tr[:n], dtype=float))
        half = float(student_t.ppf(0.975, n - 1) * logs.std(ddof=1) / np.sqrt(n))
        mean = float(logs.mean())
        how = f"95% interval over {n} paired timing rounds of this eval"
        return Speedup(math.exp(mean), math.exp(mean - half), math.exp(mean + half), how, True)
    fast = t.get("throughput_max") or t.get("throughput_items_per_s")
    slow = s.get("throughput_min") or s.get("throughput_items_per_s")
    if not (fast and slow):
        return None
    ratio = (s.get("throughput_items_per_s") or slow) / (t.get("throughput_items_per_s") or fast)
    how = "its slowest timed pass against the teacher's fastest"
    return Speedup(ratio, slow / fast, max(ratio, slow / fast), how, False)


def speed_verdict(models: Mapping[str, Any]) -> dict[str, Any]:
    """{"speedup": ...} for the verdict when a teacher and a student were both timed."""
    sp = speedup(models.get("teacher") or {}, models.get("student") or {})
    return {} if sp is None else {"speedup": sp.as_dict()}


def conservative_speedup(teacher: Mapping[str, Any], student: Mapping[str, Any]) -> float | None:
    """The low end of `speedup`: what the headline quotes."""
    sp = speedup(teacher, student)
    return None if sp is None else sp.low


def times(ratio: float, up: bool = False) -> str:
    """A speed ratio as written: rounded down (a floor is never written above itself),
    or up for an interval's high end."""
    step = 1.0 if ratio >= 10 else 0.1
    # the nudge keeps a ratio written exactly (0.3 / 0.1 = 2.999...) on its own step
    value = (math.ceil(ratio / step - 1e-9) if up else math.floor(ratio / step + 1e-9)) * step
    return f"{value:.0f}x" if ratio >= 10 else f"{value:.1f}x"


def verdict_headline(
    verdict: Mapping[str, Any],
    models: Mapping[str, Any],
    name: str,
    fmt: Callable[[float], str],
    points: Callable[[float], str],
    unit: str,
) -> str:
    """The headline, failures first. `name` is the metric as read ("accuracy", "chrF
    against gold"); `fmt` formats a score, `points` a difference of scores in `unit`."""
    metric = verdict["metric"]
    t, s, b = (models.get(r) for r in ("teacher", "student", "baseline"))
    if s is None or t is None:
        return "no student to compare yet: run `stillroom train` first"
    ts, ss = t["quality"][metric], s["quality"][metric]
    floor = models[verdict["floor"]]["name"]
    fs = models[verdict["floor"]]["quality"][metric]
    lead = []
    if not verdict["teacher_clear_of_floor"]:
        g = verdict["teacher_over_floor"]
        text = (
            f"the teacher is not clearly above a trivial answer: its {name} is {fmt(ts)} vs "
            f"{fmt(fs)} for {floor} (margin {_gap(g, points, unit)}), so there was little to "
            "distill"
        )
        if not verdict.get("student_clear_of_floor", True):
            text += f"; the student's {fmt(ss)} is not clearly above it either"
        lead.append(text)
    elif not verdict.get("student_clear_of_floor", True):
        g = verdict["student_over_floor"]
        where = "below" if g["high"] < 0 else "not clearly above"
        lead.append(
            f"the student is {where} a trivial answer: its {name} is {fmt(ss)} vs "
            f"{fmt(fs)} for {floor} (margin {_gap(g, points, unit)}), so serving it would be "
            "no better than that answer"
        )
    if b is not None and not verdict.get("distillation_paid", True):
        lead.append(
            _baseline_lead(verdict, name, fmt, (points, unit), (ts, ss, b["quality"][metric]))
        )
    kept = (
        f"the student keeps {ss / max(ts, 1e-9):.1%} of the teacher's {name} ({fmt(ss)} vs "
        f"{fmt(ts)}; the teacher is {points(abs(ts - fs))} {unit} "
        f"{'above' if ts >= fs else 'below'} {floor}, {fmt(fs)})"
    )
    if b is not None and verdict["distillation_paid"]:
        g = verdict["student_over_baseline"]
        kept += (
            f"; it beats the gold-only baseline's {fmt(b['quality'][metric])} by "
            f"{points(g['diff'])} {unit} (95% interval {points(g['low'])} to {points(g['high'])})"
        )
    speed = speedup(t, s)
    if speed is not None:
        kept += f"; it runs at {times(speed.low)} the teacher's speed or more ({speed.how}"
        if speed.paired:
            kept += f": {times(speed.low)} to {times(speed.high, up=True)}"
        kept += ")"
    return "; ".join([*lead, kept])


def _baseline_lead(
    verdict: Mapping[str, Any],
    name: str,
    fmt: Callable[[float], str],
    diff: tuple[Callable[[float], str], str],
    scores: tuple[float, float, float],
) -> str:
    """Why distilling did not pay, from the teacher's, student's and baseline's scores."""
    (points, unit), (ts, ss, bs) = diff, scores
    g = verdict["student_over_baseline"]
    behind = {"diff": -g["diff"], "low": -g["high"], "high": -g["low"]}
    if g["high"] < 0:
        text = (
            f"distillation did not pay here: the gold-only baseline scores {fmt(bs)} vs the "
            f"student's {fmt(ss)} {name}, ahead by {_gap(behind, points, unit)}"
        )
    else:
        text = (
            f"distillation did not clearly pay here: the student's {fmt(ss)} {name} is within "
            f"noise of the gold-only baseline's {fmt(bs)} (difference {_gap(g, points, unit)})"
        )
    if ts <= bs:
        text += (
            f"; the teacher itself scores {fmt(ts)}, no better than training on the gold "
            "answers alone, so imitating it could not help"
        )
    return text


def _gap(g: Mapping[str, float], points: Callable[[float], str], unit: str) -> str:
    return f"{points(g['diff'])} {unit}, 95% interval {points(g['low'])} to {points(g['high'])}"
