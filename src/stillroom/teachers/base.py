"""The Teacher protocol: requests in, completions out.

Both kinds of teacher (an OpenAI-compatible API, a local Hugging Face model) answer the same
`TeacherRequest` with the same `Completion`, so the harvest runner never asks which it has.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters, named as in the OpenAI API."""

    max_tokens: int | None = 256
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Per-token top-k log-probs: 0 asks for none. APIs cap this (OpenAI: 20).
    top_logprobs: int = 0

    def batch_key(self) -> GenerationParams:
        """What requests must share to be sampled in one batch: everything but the seed,
        which seeds each row on its own (grouping by seed would batch a client that seeds
        every request one request at a time)."""
        return replace(self, seed=None)

    def canonical(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "n": self.n,
            "seed": self.seed,
            "stop": list(self.stop),
            "top_logprobs": self.top_logprobs,
        }


@dataclass(frozen=True)
class TeacherRequest:
    """One teacher call: a plain prompt (completions) or a list of chat messages."""

    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...)
    params: GenerationParams = field(default_factory=GenerationParams)
    # Distinguishes repeated samples of one prompt so each gets its own key.
    sample_index: int = 0
    # Classification: score these continuations (label verbalizers) instead of generating.
    candidates: tuple[str, ...] = ()

    def canonical(self, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "params": self.params.canonical()}
        if self.messages is not None:
            body["messages"] = [list(m) for m in self.messages]
        else:
            body["prompt"] = self.prompt
        body["sample_index"] = self.sample_index
        if self.candidates:
            body["candidates"] = list(self.candidates)
        return body

    def key(self, model: str) -> str:
        """Hash of the canonical request: a rerun finds a stored call by it."""
        blob = json.dumps(self.canonical(model), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def text_for_estimate(self) -> str:
        if self.messages is not None:
            return "\n".join(content for _, content in self.messages)
        return self.prompt or ""


@dataclass
class Choice:
    """One generated sequence.

    Token identity comes in one of two forms. A local teacher gives vocabulary ids
    (`token_ids`, and `top_ids` are vocabulary ids). An API gives token strings: `tokens`
    holds them and `top_ids` index into `token_table`, the distinct strings of this choice.
    """

    index: int
    text: str
    finish_reason: str | None
    tokens: list[str] | None = None
    token_ids: list[int] | None = None
    token_logprobs: list[float] | None = None
    top_ids: np.ndarray | None = None  # (T, k) int64
    top_logprobs: np.ndarray | None = None  # (T, k) float32, each row sorted descending
    token_table: list[str] | None = None
    # Classification: each candidate's total log-prob, in the request's candidate order.
    label_logprobs: list[float] | None = None


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Completion:
    choices: list[Choice]
    usage: Usage
    model: str
    latency_s: float
    # Seconds of local compute attributed to this call (0 for API teachers).
    compute_s: float = 0.0
    # The prompt as the teacher tokenized it (local teachers), so a student sharing its
    # vocabulary trains on exactly the teacher's tokens.
    prompt_token_ids: list[int] | None = None


TeacherKind = str  # a registered teacher.kind (stillroom.teacher_config.TEACHER_KINDS)


class Teacher(Protocol):
    """What the harvest runner needs of a teacher."""

    model: str
    kind: TeacherKind
    # How many calls the runner should keep in flight (APIs: the concurrency limit;
    # local models: enough to fill a batch).
    concurrency: int

    async def complete(self, request: TeacherRequest) -> Completion:
        """Answer one request; raise TeacherError subclasses on failure."""
        ...

    async def aclose(self) -> None: ...
