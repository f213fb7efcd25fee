"""The audit's features are declared once: each has its sentence and its way of being shown,
and every scored feature is one the audit computes for each unit."""

from __future__ import annotations

from stillroom.audit.catalog import FEATURES, SCORED, Shown
from stillroom.audit.features import FEATURE_QUERIES, derive

# computed from each unit's sampled prompts (run.py), not by SQL
TEXT_FEATURES = ("template_reuse", "topic_breadth", "lexical_breadth")


def test_every_feature_has_a_sentence_and_the_scored_ones_are_computed() -> None:
    row = {
        "prompt_tokens": 500, "completion_tokens": 9000, "mean_n": 1, "requests": 10,
        "gap_mean": 60.0, "gap_std": 30.0, "novel_prompts": 8, "novel_tokens": 8000,
        "novel_prompt_tokens": 400, "choice_tokens": 9000, "mean_top_logprobs": 5,
        "logprob_values": 100, "active_hours": 3, "hour_entropy": 0.5,
    }  # fmt: skip
    derived = derive(row, window_hours=24)
    queried = " ".join(FEATURE_QUERIES.values())
    for name in SCORED:
        assert name in derived or f"AS {name}" in queried or name in TEXT_FEATURES, name
    for feature in FEATURES.values():
        assert "{v}" in feature.phrase, feature.name
    # a logarithm is shown as what it counts, never as the logarithm
    assert FEATURES["log_novel_tokens"].show(derived["log_novel_tokens"]) == "8,001"
    assert FEATURES["log_novel_ratio"].shown is Shown.RATIO
    assert FEATURES["frac_cot"].say(0.25) == "25% of prompts ask for step-by-step reasoning"
