"""chrF is sacreBLEU's, sentence and corpus, but for the one documented convention."""

from __future__ import annotations

import pytest
from sacrebleu.metrics import CHRF

from stillroom.evaluate.metrics import chrf, corpus_chrf

HYPS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "Résumé, naïve café",
    "日本語のテキスト",
    "line one\n\tline two",
    "",
]
REFS = [
    "A quick brown dog jumps over the lazy fox!",
    "The capital of France is Paris.",
    "resume naive cafe",
    "日本語テキスト",
    "line one line two",
    "not empty",
]


@pytest.mark.parametrize(("hyp", "ref"), list(zip(HYPS, REFS, strict=True)))
def test_sentence_chrf_is_sacrebleus(hyp: str, ref: str) -> None:
    assert chrf(hyp, ref) == pytest.approx(CHRF().sentence_score(hyp, [ref]).score, abs=1e-9)


def test_corpus_chrf_is_sacrebleus() -> None:
    for beta in (1.0, 2.0, 3.0):
        expected = CHRF(beta=int(beta)).corpus_score(HYPS, [REFS]).score
        assert corpus_chrf(HYPS, REFS, beta=beta) == pytest.approx(expected, abs=1e-9)
    # Pairs of two empty strings add no n-grams, in both.
    padded = corpus_chrf([*HYPS, ""], [*REFS, " "])
    assert padded == pytest.approx(CHRF().corpus_score(HYPS, [REFS]).score, abs=1e-9)


def test_identical_empty_answers_score_100_where_sacrebleu_gives_0() -> None:
    assert CHRF().sentence_score("", [""]).score == 0.0
    assert chrf("", "") == 100.0
    assert corpus_chrf(["", " "], ["\n", ""]) == 100.0
