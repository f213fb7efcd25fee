"""The verdict: paired bootstrap gaps, and headlines that lead with what failed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from stillroom.evaluate.run import headline
from stillroom.evaluate.verdict import (
    conservative_speedup,
    judge,
    paired_gap,
    speed_verdict,
    speedup,
    times,
)

N = 300


def correct(rng: np.random.Generator, rate: float) -> np.ndarray:
    """(N,) 0/1 per-item correctness with about `rate` right."""
    return (rng.random(N) < rate).astype(float)


def models(per_item: dict[str, np.ndarray], eff: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """eval.json-shaped rows: accuracy from the per-item scores, throughput min and max."""
    out: dict[str, Any] = {}
    for role, scores in per_item.items():
        out[role] = {"name": role, "quality": {"accuracy": round(float(scores.mean()), 4)}}
        if role in eff:
            low, high = eff[role]
            out[role]["efficiency"] = {"throughput_items_per_s": (low + high) / 2,
                                       "throughput_min": low, "throughput_max": high}  # fmt: skip
    out["most_common"]["name"] = "always 'animal'"
    return out


def verdict_and_headline(per_item: dict[str, np.ndarray]) -> tuple[dict[str, Any], str]:
    floor = {"most_common": per_item.pop("most_common")}
    rows = models(per_item | floor, {"teacher": (50.0, 60.0), "student": (400.0, 520.0)})
    scores = {k: m["quality"]["accuracy"] for k, m in rows.items()}
    verdict = judge(per_item, floor, scores, "accuracy")
    return verdict, headline(rows, verdict)


def test_a_gap_between_identical_models_is_zero() -> None:
    a = correct(np.random.default_rng(0), 0.7)
    assert paired_gap(a, a).as_dict() == {"diff": 0.0, "low": 0.0, "high": 0.0}


def test_a_gap_interval_holds_the_difference_and_tightens_with_pairing() -> None:
    rng = np.random.default_rng(1)
    a = correct(rng, 0.6)
    b = a.copy()
    flip = rng.choice(N, 15, replace=False)  # b gets 15 of a's items wrong that a got right
    b[flip] = 0
    gap = paired_gap(a, b)
    assert gap.low <= gap.diff <= gap.high
    assert gap.diff == pytest.approx((a - b).mean())
    # The items both get right or wrong do not count: an unpaired interval would be far wider
    assert gap.low >= 0 and gap.high - gap.low < 0.05
    assert paired_gap(a, b) == gap  # seeded: the same items give the same interval


def test_the_baseline_beating_the_student_is_said_first() -> None:
    rng = np.random.default_rng(2)
    gold_right = correct(rng, 0.52)
    verdict, text = verdict_and_headline({
        "teacher": correct(rng, 0.40),
        "student": gold_right * correct(rng, 0.6),  # about 31%, from items the baseline gets
        "baseline": gold_right,
        "most_common": correct(rng, 0.14),
    })  # fmt: skip
    assert verdict["distillation_paid"] is False
    assert text.startswith("distillation did not pay here: the gold-only baseline scores")
    assert "the teacher itself scores" in text  # why: the teacher is below the baseline
    kept = text.index("the student keeps")
    assert text.index("above always 'animal'") > kept and "gold-only baseline" in text[:kept]


def test_a_student_within_noise_of_the_baseline_did_not_clearly_pay() -> None:
    rng = np.random.default_rng(3)
    baseline = correct(rng, 0.8)
    student = baseline.copy()
    student[rng.choice(N, 4, replace=False)] = 1 - student[:4]  # a few items differ
    verdict, text = verdict_and_headline({"teacher": correct(rng, 0.85), "student": student,
                                          "baseline": baseline,
                                          "most_common": correct(rng, 0.2)})  # fmt: skip
    assert verdict["student_over_baseline"]["low"] <= 0 <= verdict["student_over_baseline"]["high"]
    assert text.startswith("distillation did not clearly pay here: the student's")


def test_a_teacher_at_chance_is_said_first() -> None:
    rng = np.random.default_rng(4)
    floor = correct(rng, 0.25)
    teacher = floor.copy()
    teacher[np.flatnonzero(floor == 0)[:3]] = 1  # 1 point above always answering one label
    verdict, text = verdict_and_headline({"teacher": teacher, "student": floor.copy(),
                                          "most_common": floor})  # fmt: skip
    assert verdict["teacher_clear_of_floor"] is False
    assert text.startswith("the teacher is not clearly above a trivial answer: its accuracy is")
    assert f"the student's {floor.mean():.1%} is not clearly above it either" in text


def test_a_teacher_below_a_trivial_answer_is_said_to_be_below_it() -> None:
    rng = np.random.default_rng(6)
    floor = correct(rng, 0.6)
    _, text = verdict_and_headline({"teacher": floor * correct(rng, 0.5),
                                    "student": floor * correct(rng, 0.4),
                                    "most_common": floor})  # fmt: skip
    assert text.startswith("the teacher is not clearly above a trivial answer")
    assert "points below always 'animal'" in text and "points above" not in text


def test_a_student_below_a_trivial_answer_is_said_first() -> None:
    """A good teacher, and a student no better than always giving one label (a generation
    task has no gold-only baseline to lead with: this is its honest lead)."""
    rng = np.random.default_rng(8)
    floor = correct(rng, 0.3)
    verdict, text = verdict_and_headline({"teacher": correct(rng, 0.9),
                                          "student": floor * correct(rng, 0.9),
                                          "most_common": floor})  # fmt: skip
    assert verdict["teacher_clear_of_floor"] and not verdict["student_clear_of_floor"]
    assert text.startswith("the student is below a trivial answer: its accuracy is")
    assert "always 'animal'" in text.split(";")[0]


def test_the_normal_headline_shows_the_teachers_margin_and_the_baseline() -> None:
    rng = np.random.default_rng(5)
    teacher = correct(rng, 0.88)
    student = np.maximum(teacher, correct(rng, 0.1))  # the teacher's right answers and some
    baseline = teacher * correct(rng, 0.85)
    verdict, text = verdict_and_headline({"teacher": teacher, "student": student,
                                          "baseline": baseline,
                                          "most_common": correct(rng, 0.13)})  # fmt: skip
    assert verdict["distillation_paid"] and verdict["teacher_clear_of_floor"]
    assert text.startswith("the student keeps 1")
    assert "points above always 'animal'" in text
    assert "; it beats the gold-only baseline's" in text
    # the speed is the student's slowest round over the teacher's fastest: 400 / 60
    assert "; it runs at 6.6x the teacher's speed or more" in text  # 6.67, rounded down


def test_the_speedup_is_the_conservative_end() -> None:
    t = {"efficiency": {"throughput_items_per_s": 55, "throughput_min": 50, "throughput_max": 60}}
    s = {
        "efficiency": {"throughput_items_per_s": 450, "throughput_min": 300, "throughput_max": 500}
    }
    assert conservative_speedup(t, s) == pytest.approx(300 / 60)  # no paired rounds
    old = {"efficiency": {"throughput_items_per_s": 100}}  # an eval.json from before rounds
    assert conservative_speedup(t, old) == pytest.approx(100 / 60)


def test_paired_rounds_give_the_speedup_an_interval() -> None:
    rng = np.random.default_rng(3)
    load = rng.uniform(0.5, 1.0, 20)  # each round's load slows both models alike
    t = {"efficiency": {"turn_rates": list(60 * load), "throughput_min": 30, "throughput_max": 60}}
    s = {"efficiency": {"turn_rates": list(600 * load * rng.uniform(0.9, 1.1, 20)),
                        "throughput_min": 300, "throughput_max": 660}}  # fmt: skip
    sp = speedup(t, s)
    assert sp is not None and sp.paired and "20 paired timing rounds" in sp.how
    # The load cancels within a round: the interval sits tightly around 10x, where the
    # slowest-against-fastest pairing (300 / 60) would say 5x.
    assert 9.3 < sp.low < sp.ratio < sp.high < 10.7
    assert conservative_speedup(t, s) == sp.low
    assert speed_verdict({"teacher": t, "student": s})["speedup"]["low"] == round(sp.low, 3)
    few = {"efficiency": {**s["efficiency"], "turn_rates": s["efficiency"]["turn_rates"][:11]}}
    assert conservative_speedup(t, few) == pytest.approx(300 / 60)  # too few rounds to pair


def test_speed_ratios_are_written_rounded_down_and_interval_tops_up() -> None:
    assert (times(13.61), times(14.83, up=True)) == ("13x", "15x")
    assert (times(9.96), times(6.7), times(0.3)) == ("9.9x", "6.7x", "0.3x")
