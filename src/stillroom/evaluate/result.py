"""What `evaluate()` returns (and `eval.json` holds): the same keys for label and text tasks,
plus the confusion matrices of a label task or the notes and examples of a text task."""

from __future__ import annotations

from typing import Any, Required, TypedDict


class EvalResult(TypedDict, total=False):
    run: Required[str]
    task: Required[dict[str, Any]]  # kind, metric, n_test, and labels or the gold field
    headline: Required[str]  # the one sentence a reader sees first
    models: Required[dict[str, Any]]  # role (teacher, student, baseline) -> quality, cost, speed
    training_logs: Required[dict[str, Any]]
    settings: Required[dict[str, Any]]  # what the timing ran on
    verdict: dict[str, Any]  # did distilling pay: gaps to the baseline and trivial answers
    confusion: dict[str, Any]  # label tasks: role -> confusion matrix
    notes: list[str]  # text tasks: what to keep in mind reading the figures
    examples: list[dict[str, Any]]  # text tasks: prompts with every model's answer
    harvest: dict[str, Any]  # `distill`: the harvest's calls and spend
