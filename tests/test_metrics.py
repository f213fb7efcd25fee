import numpy as np
import pytest

from stillroom.evaluate.efficiency import cost_per_million
from stillroom.evaluate.metrics import accuracy, confusion, label_kl, macro_f1


def test_accuracy_confusion_and_macro_f1_on_a_worked_example() -> None:
    gold = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    assert confusion(pred, gold, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # per class F1: c0 p=1/2 r=1/2 -> 1/2; c1 p=2/3 r=1 -> 0.8; c2 p=1 r=1/2 -> 2/3
    assert macro_f1(pred, gold, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_is_one_when_perfect_and_ignores_absent_classes() -> None:
    gold = np.array([0, 1, 1, 0])
    assert macro_f1(gold, gold, 5) == 1.0


def test_label_kl_zero_for_identical_and_positive_otherwise() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 4))
    assert label_kl(logits, logits + 3.0) == pytest.approx(0.0, abs=1e-9)
    assert label_kl(logits, rng.normal(size=(20, 4))) > 0


def test_cost_per_million_scales_with_throughput() -> None:
    assert cost_per_million(100.0, 0.05, 2) == pytest.approx(1e6 / 100 / 3600 * 0.1)
    assert cost_per_million(200.0, 0.05, 2) == pytest.approx(cost_per_million(100.0, 0.05, 2) / 2)
