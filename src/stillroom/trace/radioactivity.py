"""Radioactivity: did a suspect model learn from our watermarked outputs?

In the style of Sander et al. (2024), "Watermarking Makes Language Models Radioactive": a
model trained on watermarked text picks up a preference for the green tokens after each
context, so its own outputs score green more often than the gamma expected by chance.

Validity of the exact binomial test needs each scored event to be a fresh coin flip under
the null, so:

- each (context, token) tuple counts once across *all* of the suspect's outputs (a model
  repeating itself would otherwise count the same flip many times);
- tuples that occur in the prompts are skipped (a model copying the prompt shows nothing);
- the test is sequential with a fixed plan of looks, and the p-value at look k is multiplied
  by k (Bonferroni over the looks taken), so stopping early cannot inflate significance.

The null needs only the suspect's sampling to be independent of the key, so how it samples
is free as long as it does not read the key. An open-weights suspect (`LocalSuspect`) keeps
no log-probs, samples 64 answers at a time on one torch thread, and answers from a bfloat16
copy of its weights where the CPU has native bfloat16 arithmetic: several times the queries
per CPU-minute of float32 batches of 16 on a 262k-vocabulary suspect
(benchmarks/trace_generate_speed.py). Its answers are still drawn from its own distribution
at the requested temperature (exact inverse-CDF sampling), of those bfloat16 weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import binom

from stillroom.errors import InputError
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey

# Answers asked for at once from a suspect that names no batch size of its own (an API).
_ANSWER_BATCH = 64


@dataclass
class Look:
    queries: int
    tuples_scored: int
    green: int
    p_value: float  # raw exact binomial p-value at this look
    p_adjusted: float  # times the number of looks taken so far


@dataclass
class TupleScore:
    """Distinct (context, token) tuples seen so far, and how many are green."""

    green_list: GreenList
    seen: set[bytes] = field(default_factory=set)
    excluded: set[bytes] = field(default_factory=set)
    scored: int = 0
    green: int = 0

    def _windows(self, ids: Sequence[int]) -> np.ndarray:
        w = self.green_list.width
        arr = np.asarray(ids, dtype=np.int64)
        if len(arr) <= w:
            return np.zeros((0, w + 1), np.int64)
        return sliding_window_view(arr, w + 1)  # (T - w, w + 1): context, token

    def exclude(self, prompt_ids: Sequence[int]) -> None:
        """Tuples of a prompt: never scored, whoever writes them later."""
        self.exclude_rows(self._windows(prompt_ids))

    def exclude_rows(self, rows: np.ndarray) -> None:
        """(N, w + 1) int64 rows of context ids then token id: never scored."""
        self.excluded.update(
            np.ascontiguousarray(rows, np.int64)[i].tobytes() for i in range(len(rows))
        )

    def add(self, output_ids: Sequence[int]) -> None:
        """Every (context, token) window of one output."""
        self.add_rows(self._windows(output_ids))

    def add_rows(self, rows: np.ndarray) -> None:
        """(N, w + 1) int64 rows of context ids then token id: score the fresh ones."""
        rows = np.ascontiguousarray(rows, np.int64)
        fresh = []
        for row in rows:
            b = row.tobytes()
            if b not in self.seen and b not in self.excluded:
                self.seen.add(b)
                fresh.append(row)
        if fresh:
            pairs = np.stack(fresh)
            w = self.green_list.width
            self.green += int(self.green_list.green_pairs(pairs[:, :w], pairs[:, w]).sum())
            self.scored += len(fresh)

    def p_value(self) -> float:
        if self.scored == 0:
            return 1.0
        gamma = self.green_list.key.gamma
        return float(min(1.0, binom.sf(self.green - 1, self.scored, gamma)))

    def z(self) -> float:
        if self.scored == 0:
            return 0.0
        gamma = self.green_list.key.gamma
        n = self.scored
        return float((self.green - gamma * n) / np.sqrt(n * gamma * (1 - gamma)))


def planned_looks(budget: int, first: int = 50) -> list[int]:
    """Query counts at which the test looks: doubling from `first`, ending at the budget."""
    looks, q = [], max(1, min(first, budget))
    while q < budget:
        looks.append(q)
        q *= 2
    return [*looks, budget]


@dataclass
class RadioactivityResult:
    suspect: str
    key_id: str
    gamma: float
    queries: int
    tuples_scored: int
    green: int
    green_rate: float
    z: float
    p_value: float  # adjusted for the looks taken: what the verdict rests on
    target_p: float
    stopped: str  # "significant" | "budget"
    looks: list[Look]
    mode: str = "generate"  # "generate": the suspect's answers; "read": its predictions


def radioactivity_test(
    suspect: Any,
    prompts: Sequence[str],
    key: WatermarkKey,
    tokenizer: Any,
    *,
    budget: int = 2000,
    target_p: float = 1e-6,
    max_tokens: int = 128,
    temperature: float = 0.8,
    seed: int = 0,
    progress: Any = None,
    progress_batch: Callable[[int, int], None] | None = None,
) -> RadioactivityResult:
    """Question `suspect` with `prompts` (cycled) until p < target_p or `budget` queries.

    `progress(look)` is called at each look; `progress_batch(answered, next_look)` after
    each batch of answers (the suspect's `batch_size`, else 64), with the queries answered
    so far and the count at which the next look is taken: the first look waits for 50.
    """
    if not prompts:
        raise InputError("radioactivity needs prompts to ask the suspect; give --prompts FILE")
    score = TupleScore(GreenList(key))
    looks: list[Look] = []
    done = 0
    step = max(1, int(getattr(suspect, "batch_size", None) or _ANSWER_BATCH))
    for k, upto in enumerate(planned_looks(budget), start=1):
        for start in range(done, upto, step):
            end = min(start + step, upto)
            batch = [prompts[i % len(prompts)] for i in range(start, end)]
            answers = suspect.answer(
                batch, max_tokens=max_tokens, temperature=temperature, seed=seed + start
            )
            encode = tokenizer(batch + answers, add_special_tokens=False)["input_ids"]
            for ids in encode[: len(batch)]:
                score.exclude(ids)
            for ids in encode[len(batch) :]:
                score.add(ids)
            if progress_batch is not None:
                progress_batch(end, upto)
        done = upto
        if take_look(score, looks, done, k, progress).p_adjusted < target_p:
            break
    return conclude(str(getattr(suspect, "name", suspect)), key, score, looks, target_p)


def take_look(
    score: TupleScore, looks: list[Look], queries: int, k: int, progress: Any = None
) -> Look:
    """Record the k-th look (Bonferroni over the k looks taken) and report it."""
    p = score.p_value()
    look = Look(queries, score.scored, score.green, p, min(1.0, p * k))
    looks.append(look)
    if progress is not None:
        progress(look)
    return look


def conclude(
    suspect: str,
    key: WatermarkKey,
    score: TupleScore,
    looks: list[Look],
    target_p: float,
    mode: str = "generate",
) -> RadioactivityResult:
    """The result as of the last look taken: its adjusted p-value is the verdict's."""
    last = looks[-1]
    return RadioactivityResult(
        suspect=suspect,
        key_id=key.key_id,
        gamma=key.gamma,
        queries=last.queries,
        tuples_scored=last.tuples_scored,
        green=last.green,
        green_rate=last.green / last.tuples_scored if last.tuples_scored else 0.0,
        z=score.z(),
        p_value=last.p_adjusted,
        target_p=target_p,
        stopped="significant" if last.p_adjusted < target_p else "budget",
        looks=looks,
        mode=mode,
    )
