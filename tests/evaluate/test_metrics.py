import numpy as np
import pytest

from stillroom.evaluate.efficiency import cost_per_million
from stillroom.evaluate.metrics import (
    accuracy,
    chrf,
    confusion,
    corpus_chrf,
    exact_match,
    label_kl,
    macro_f1,
    normalise_whitespace,
)


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


# --- text ---------------------------------------------------------------------------------


def test_exact_match_normalises_whitespace_only() -> None:
    assert normalise_whitespace("  the\tcat \n\u00a0sat  ") == "the cat sat"
    hyps = ["the cat", " the  cat\n", "The cat", "the cat."]
    assert exact_match(hyps, ["the cat"] * 4) == pytest.approx(2 / 4)  # case, punctuation count
    assert exact_match([], []) == 0.0
    with pytest.raises(ValueError, match="pair them up"):
        exact_match(["a"], [])


def test_chrf_hand_computed_on_small_strings() -> None:
    # (These values, and corpus_chrf on random strings, agree with sacreBLEU 2.6's CHRF().)
    # abc vs abd: 1-grams p = r = 2/3; 2-grams {ab, bc} vs {ab, bd}: 1/2; 3-grams 0;
    # orders 4-6 have no n-grams on either side and are left out: P = R = (2/3 + 1/2 + 0) / 3.
    assert chrf("abc", "abd") == pytest.approx(100 * 7 / 18)
    # ab vs abc: 1-grams p = 1, r = 2/3; 2-grams p = 1, r = 1/2; the hypothesis has no
    # 3-gram. P = 1, R = 7/12, F2 = 5 P R / (4 P + R) = (35/12) / (55/12) = 7/11.
    assert chrf("ab", "abc") == pytest.approx(100 * 7 / 11)
    assert chrf("abc", "ab") == pytest.approx(100 * 5 * (7 / 12) / (4 * 7 / 12 + 1))
    # Matches are clipped: aaa vs a matches one a. p = 1/3, r = 1: F2 = (5/3) / (7/3) = 5/7.
    assert chrf("aaa", "a") == pytest.approx(100 * 5 / 7)


def test_chrf_beta_weighs_recall() -> None:
    # ab vs abc: P = 1, R = 7/12; beta = 1 is the harmonic mean 2PR / (P + R) = 14/19.
    assert chrf("ab", "abc", beta=1.0) == pytest.approx(100 * 14 / 19)
    assert chrf("ab", "abc") < chrf("ab", "abc", beta=1.0)  # recall is the weak side here


def test_chrf_edge_cases() -> None:
    text = "The quick brown fox jumps over the lazy dog."
    assert chrf(text, text) == pytest.approx(100.0)
    assert chrf("", "") == 100.0  # identical (empty) answers
    assert chrf(" \n", "") == 100.0  # whitespace only is empty
    assert chrf("", "abc") == 0.0
    assert chrf("abc", "") == 0.0
    assert chrf("xyz", "abc") == 0.0
    assert chrf("a b c", "abc") == pytest.approx(100.0)  # whitespace is not scored
    assert chrf("x", "x") == pytest.approx(100.0)  # one character: only 1-grams count


def test_corpus_chrf_sums_counts_over_pairs() -> None:
    assert corpus_chrf(["abc", ""], ["abd", ""]) == pytest.approx(chrf("abc", "abd"))
    # abc/abd plus aaa/a: 1-grams p = (2+1)/(3+3), r = (2+1)/(3+1); 2-grams: a has none, so
    # aaa's two are not counted, p = r = 1/2; 3-grams likewise: p = r = 0/1.
    p = (1 / 2 + 1 / 2 + 0) / 3
    r = (3 / 4 + 1 / 2 + 0) / 3
    assert corpus_chrf(["abc", "aaa"], ["abd", "a"]) == pytest.approx(100 * 25 / 63)
    assert corpus_chrf(["abc", "aaa"], ["abd", "a"]) == pytest.approx(100 * 5 * p * r / (4 * p + r))
    assert corpus_chrf(["abc", ""], ["", ""]) == 0.0
    assert corpus_chrf(["", ""], ["", ""]) == 100.0
    assert corpus_chrf([], []) == 0.0
    rng = np.random.default_rng(0)
    words = ["cat", "dog", "sat", "mat", "on", "the"]
    for _ in range(20):
        ref = " ".join(rng.choice(words, 5))
        hyp = " ".join(rng.choice(words, 4))
        assert 0.0 <= chrf(hyp, ref) <= 100.0
        assert chrf(ref, ref) == pytest.approx(100.0)
