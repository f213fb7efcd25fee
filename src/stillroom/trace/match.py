"""Output match: which candidate parent does the suspect answer like?

In the style of Nikolic et al. (2025), "Model Provenance Testing for Large Language Models":
a model derived from a parent (fine-tuned from it, or distilled from its outputs) gives the
same greedy answer token for token far more often than unrelated models do. The suspect,
every candidate parent and every reference model answer the same random prompts greedily;
each answer is tokenized with one comparison tokenizer, and the match rate of a model on a
prompt is the share of the suspect's answer positions where the model wrote the same token.

The test. The references set the bar: models comparable to the candidates that the suspect
is known not to derive from. For each candidate we compare it, prompt by prompt, with the
reference that matches the suspect best overall, and count the prompts where the candidate
matches more (wins) and fewer (losses) tokens; ties carry no information and are dropped.
Under the null hypothesis "the candidate is no closer to the suspect than that reference",
a win is at most as likely as a loss, so wins ~ Binomial(wins + losses, 1/2) at worst, and
the one-sided p-value P(X >= wins) is exact (the sign test). Why this test:

- prompts are the independent units: tokens within one answer are not (after the first
  different token, the rest of the two answers follow different paths), so a binomial over
  tokens would overstate the evidence;
- the sign test needs no assumption on how the per-prompt differences are distributed
  (match rates pile up at 0 and 1, far from normal, which rules out a paired t-test and
  makes a signed-rank test's symmetry assumption doubtful);
- taking the best reference (chosen on the same data) only raises the bar, so the p-value
  stays valid (conservative).

The candidates' p-values are corrected with Holm-Bonferroni (family-wise error at most
alpha over all candidates), and a parent is named only when its corrected p is below alpha.
What it cannot show: a parent the candidates do not include, or a suspect whose parent is
closer kin to the references than the candidates are; references must be comparable models
(same size class and era), or any candidate "wins" against weak references.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import binom

from stillroom.errors import InputError


@dataclass
class Comparison:
    name: str
    role: str  # "candidate" | "reference"
    match_rate: float  # mean over prompts of the share of the suspect's tokens matched
    wins: int = 0  # candidates: prompts where it matches more than the best reference
    losses: int = 0
    p_value: float = 1.0  # one-sided exact sign test against the best reference
    p_holm: float = 1.0  # Holm-Bonferroni over the candidates


@dataclass
class MatchResult:
    suspect: str
    prompts: int  # queries to the suspect (and to every candidate and reference)
    max_tokens: int
    alpha: float
    best_reference: str
    candidates: list[Comparison]
    references: list[Comparison]
    parent: str | None  # the closest candidate whose corrected p is below alpha
    significant: list[str] = field(default_factory=list)


def match_rates(suspect_ids: Sequence[Sequence[int]], other_ids: Sequence[Sequence[int]]) -> Any:
    """Per prompt: the share of the suspect's answer positions where the other model wrote
    the same token. (N,) float; an empty suspect answer counts as matched only by an empty one."""
    out = np.empty(len(suspect_ids))
    for i, (s, o) in enumerate(zip(suspect_ids, other_ids, strict=True)):
        if not s:
            out[i] = float(not o)
            continue
        n = min(len(s), len(o))
        same = np.asarray(s[:n]) == np.asarray(o[:n])
        out[i] = float(same.sum()) / len(s)
    return out


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(X >= wins), X ~ Binomial(wins + losses, 1/2)."""
    n = wins + losses
    return 1.0 if n == 0 else float(min(1.0, binom.sf(wins - 1, n, 0.5)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (step-down, kept monotone)."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted.tolist()


def compare(
    suspect: Sequence[Sequence[int]],
    candidates: dict[str, Sequence[Sequence[int]]],
    references: dict[str, Sequence[Sequence[int]]],
    *,
    alpha: float = 0.01,
    suspect_name: str = "suspect",
    max_tokens: int = 0,
) -> MatchResult:
    """The test on token ids already in hand: one answer per prompt from every model."""
    if not candidates or not references:
        raise InputError(
            "the output-match test needs at least one --candidate (a possible parent) and "
            "one --reference (a comparable model the suspect does not derive from)"
        )
    rates = {n: match_rates(suspect, ids) for n, ids in {**candidates, **references}.items()}
    best = max(references, key=lambda n: float(rates[n].mean()))
    refs = [Comparison(n, "reference", float(rates[n].mean())) for n in references]
    cands = []
    for name in candidates:
        diff = rates[name] - rates[best]
        wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
        cands.append(
            Comparison(
                name,
                "candidate",
                float(rates[name].mean()),
                wins,
                losses,
                sign_test(wins, losses),
            )
        )
    for c, p in zip(cands, holm([c.p_value for c in cands]), strict=True):
        c.p_holm = p
    significant = sorted(
        (c for c in cands if c.p_holm < alpha), key=lambda c: c.match_rate, reverse=True
    )
    return MatchResult(
        suspect=suspect_name,
        prompts=len(suspect),
        max_tokens=max_tokens,
        alpha=alpha,
        best_reference=best,
        candidates=cands,
        references=refs,
        parent=significant[0].name if significant else None,
        significant=[c.name for c in significant],
    )


def output_match_test(
    suspect: Any,
    candidates: dict[str, Any],
    references: dict[str, Any],
    prompts: Sequence[str],
    tokenizer: Any,
    *,
    max_tokens: int = 32,
    alpha: float = 0.01,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> MatchResult:
    """Ask every model `prompts` greedily, tokenize the answers with `tokenizer`, compare.

    `suspect`, candidates and references are anything with `answer(prompts, max_tokens=,
    temperature=, seed=)` (see suspects.py): model folders or OpenAI-compatible APIs alike.
    """
    if not prompts:
        raise InputError("the output-match test needs prompts; give --prompts FILE")
    clash = set(candidates) & set(references)
    if clash:
        raise InputError(f"{sorted(clash)} named both as candidate and as reference; rename one")

    def ids_of(name: str, model: Any) -> list[list[int]]:
        if progress is not None:
            progress(name)
        texts = model.answer(list(prompts), max_tokens=max_tokens, temperature=0.0, seed=seed)
        return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    got = ids_of("suspect", suspect)
    return compare(
        got,
        {n: ids_of(n, m) for n, m in candidates.items()},
        {n: ids_of(n, m) for n, m in references.items()},
        alpha=alpha,
        suspect_name=str(getattr(suspect, "name", suspect)),
        max_tokens=max_tokens,
    )


def random_prompts(pool: Sequence[str], n: int, seed: int) -> list[str]:
    """Up to n distinct prompts drawn at random from `pool`. Never repeats: a prompt asked
    twice gets the same greedy answers twice, which the sign test would count as two
    independent wins."""
    distinct = list(dict.fromkeys(pool))
    if not distinct:
        raise InputError("no prompts to draw from; give --prompts FILE with at least one row")
    order = np.random.default_rng(seed).permutation(len(distinct))[:n]
    return [distinct[i] for i in order]


def statement(r: MatchResult) -> str:
    """What the output-match result shows, and what it does not, in plain words."""
    ref = next(c for c in r.references if c.name == r.best_reference)
    if r.parent is not None:
        c = next(c for c in r.candidates if c.name == r.parent)
        return (
            f"On {r.prompts} random prompts answered greedily, the suspect's answers match "
            f"{c.name}'s on {c.match_rate:.1%} of tokens against {ref.match_rate:.1%} for the "
            f"closest reference ({ref.name}); {c.name} matches more on {c.wins} prompts and "
            f"less on {c.losses}: p = {c.p_holm:.2g} (exact sign test, Holm-corrected over "
            f"{len(r.candidates)} candidates). This shows the suspect is closer to {c.name} "
            "than the references are, as a model derived from it would be. It does not show "
            "how: fine-tuning, distillation on its outputs, or a shared ancestor all give this."
        )
    best = max(r.candidates, key=lambda c: c.match_rate)
    return (
        f"No candidate matches the suspect better than the references at corrected p < "
        f"{r.alpha:g} on {r.prompts} prompts (closest candidate {best.name}: "
        f"{best.match_rate:.1%} of tokens vs {ref.match_rate:.1%} for {ref.name}, "
        f"p = {best.p_holm:.2g}). This does not show the suspect is independent: its parent "
        "may not be among the candidates, or more prompts may be needed to tell them apart."
    )
