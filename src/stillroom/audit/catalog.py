"""Every feature the audit reports, declared once: its evidence sentence, how its value is
shown, and, for the few that are scored, why.

A scored feature looks more like harvesting the higher it is (the score is one-sided, see
score.py). The scored ones describe what a unit takes from the model (how many answer tokens,
how long, with how many log-probabilities, to what prompts), not how it uses the API: a
harvest wants long answers (and their log-probs) to many distinct prompts nobody else sends; a
production workload repeats one narrow task, however heavy, regular or templated it is.
Request counts, timing and sampling habits (n, temperature, single turns, templates) are
reported, not scored: every one of them is also some ordinary workload's signature.

To add a feature: compute it per unit in features.py (its SQL aggregate in FEATURE_QUERIES,
its formula in `derive`), then declare it here; `scored` puts it in the score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Shown(StrEnum):
    """How a feature's stored value (often a logarithm) is written for people."""

    COUNT = "count"  # log10 of a count: 1,234
    RATIO = "ratio"  # log10 of a ratio: 3.2x
    PER = "per"  # log10 of 1 + a mean: 1,234
    TOKENS = "tokens"  # natural log of a token limit: 4,096
    SHARE = "share"  # a fraction: 42%
    WHOLE = "whole"  # a small whole number: 20
    NUMBER = "number"  # anything else: 0.42


@dataclass(frozen=True)
class Feature:
    name: str
    phrase: str  # the evidence sentence; {v} is the value as shown
    shown: Shown = Shown.NUMBER
    scored: str = ""  # why it is scored, in a few words; empty: reported only

    def show(self, v: float) -> str:
        match self.shown:
            case Shown.COUNT:
                return f"{10**v:,.0f}"
            case Shown.RATIO:
                return f"{10**v:.1f}x"
            case Shown.PER:
                return f"{10**v - 1:,.0f}"
            case Shown.TOKENS:
                return f"{math.e**v:,.0f}"
            case Shown.SHARE:
                return f"{v:.0%}"
            case Shown.WHOLE:
                return f"{v:.0f}"
        return f"{v:.2f}"

    def say(self, v: float) -> str:
        return self.phrase.format(v=self.show(v))


def _declare(*features: Feature) -> dict[str, Feature]:
    return {f.name: f for f in features}


NOVEL = "prompts no other account sends"
FEATURES = _declare(
    # scored
    Feature("log_novel_tokens", f"received {{v}} answer tokens to {NOVEL}", Shown.COUNT,
            scored=f"answer tokens to distinct {NOVEL}"),
    Feature("log_novel_answer", f"receives {{v}} tokens per answer to {NOVEL}", Shown.PER,
            scored=f"answer tokens per prompt, on {NOVEL}"),
    Feature("log_novel_ratio", "gets {v} more answer than prompt tokens on prompts no one "
            "else sends", Shown.RATIO,
            scored=f"answer tokens per prompt token, on {NOVEL}"),
    Feature("log_logprob_values", "receives {v} log-probability values per request",
            Shown.COUNT, scored="log-probability values received per request"),
    Feature("frac_cot", "{v} of prompts ask for step-by-step reasoning", Shown.SHARE,
            scored="share of prompts eliciting step-by-step reasoning"),
    Feature("lexical_breadth", "prompts range over many subjects: {v} of content words "
            "distinct", Shown.SHARE, scored="subjects spanned (distinct content words)"),
    # reported
    Feature("prompt_uniqueness", "{v} of prompts are distinct, none asked twice", Shown.SHARE),
    Feature("prompt_exclusivity", "{v} of prompts are sent by no other account, unlike "
            "public benchmark items", Shown.SHARE),
    Feature("log_mean_completion", "receives {v} completion tokens per reply", Shown.PER),
    Feature("log_output_input_ratio", "gets {v} more completion than prompt tokens",
            Shown.RATIO),
    Feature("log_choice_tokens", "received {v} completion tokens (one choice per request)",
            Shown.COUNT),
    Feature("mean_log_max_tokens", "asks for up to {v} tokens per reply", Shown.TOKENS),
    Feature("log_completion_tokens", "received {v} completion tokens", Shown.COUNT),
    Feature("topic_breadth", "prompts span many topics: dispersion {v}", Shown.SHARE),
    Feature("frac_single_turn", "{v} of requests are single-turn, no conversation",
            Shown.SHARE),
    Feature("log_requests", "sent {v} requests", Shown.COUNT),
    Feature("frac_logprobs", "asks for log-probabilities on {v} of requests", Shown.SHARE),
    Feature("top_logprobs", "asks for the top {v} log-probabilities per token", Shown.WHOLE),
    Feature("frac_n_gt1", "asks for several samples (n > 1) on {v} of requests", Shown.SHARE),
    Feature("template_reuse", "{v} of prompts fill a repeated template", Shown.SHARE),
    Feature("hour_entropy", "active around the clock: hour-of-day spread {v}", Shown.SHARE),
    Feature("active_hours_frac", "active in {v} of the window's hours", Shown.SHARE),
    Feature("regularity", "machine-regular timing: regularity {v}", Shown.SHARE),
    Feature("frac_rate_limited", "{v} of requests hit the rate limit", Shown.SHARE),
    Feature("mean_temperature", "samples at temperature {v} on average"),
    Feature("frac_temperature_zero", "{v} of requests sample at temperature 0", Shown.SHARE),
    Feature("gap_cv", "time between requests varies by {v} of its mean"),
    Feature("keys", "uses {v} API keys", Shown.WHOLE),
    Feature("addresses", "sends from {v} client addresses", Shown.WHOLE),
    Feature("user_agents", "sends with {v} user agents", Shown.WHOLE),
)  # fmt: skip
SCORED: dict[str, str] = {n: f.scored for n, f in FEATURES.items() if f.scored}
REPORTED: tuple[str, ...] = tuple(n for n, f in FEATURES.items() if not f.scored)
