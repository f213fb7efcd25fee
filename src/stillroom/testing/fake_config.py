"""What the fake server is told: its latency, its model, and the faults it injects."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

FaultKind = Literal["429", "500", "slow", "drop", "missing_fields", "400", "401", "404"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


@dataclass(frozen=True)
class FaultRule:
    """Inject `kind` into the generation requests the selectors pick.

    Requests are numbered 1, 2, ... in arrival order (since start or `reset_stats`). Every
    selector that is set must hold; a rule with none applies to every request. The first
    matching rule in the schedule wins.

    - every: requests every, 2*every, ...;  first: requests 1..first;  requests: these numbers
    - attempts: the first `attempts` tries of each distinct body (deterministic even when
      concurrent clients reorder arrivals)
    - probability: with this chance, decided by (seed, request number)

    Kinds: "429" (with a Retry-After of `retry_after` s), "500", "400", "401", "404" (OpenAI
    error envelopes), "slow" (reply after an extra `delay` s), "drop" (close the connection
    without a response), "missing_fields" (200 with choices lacking message/text).
    """

    kind: FaultKind
    every: int | None = None
    first: int | None = None
    requests: tuple[int, ...] = ()
    attempts: int | None = None
    probability: float | None = None
    seed: int = 0
    retry_after: float = 1.0
    delay: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {FAULT_KINDS}")
        for name in ("every", "first", "attempts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"FaultRule.{name} must be >= 1, got {value}")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"FaultRule.probability must be in [0, 1], got {self.probability}")

    def applies(self, number: int, attempt: int) -> bool:
        """Whether request `number` (1-based), the `attempt`-th with its body, gets this fault."""
        if self.every is not None and number % self.every:
            return False
        if self.first is not None and number > self.first:
            return False
        if self.requests and number not in self.requests:
            return False
        if self.attempts is not None and attempt > self.attempts:
            return False
        if self.probability is not None:
            # Keyed on the request number rather than drawn from a shared stream, so the
            # decision for request n never depends on which other rules consumed randomness.
            return random.Random(f"{self.seed}:{number}").random() < self.probability
        return True

    @classmethod
    def parse(cls, spec: str) -> FaultRule:
        """The CLI syntax: 'KIND[:key=value,...]', e.g. '429:every=5,retry_after=0.5'."""
        kind, _, rest = spec.partition(":")
        kwargs: dict[str, Any] = {}
        names = {f.name for f in fields(cls)} - {"kind"}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key not in names:
                raise ValueError(f"bad fault option {item!r} in {spec!r}")
            if key == "requests":
                kwargs[key] = tuple(int(v) for v in value.split("+"))
            elif key in ("probability", "retry_after", "delay"):
                kwargs[key] = float(value)
            else:
                kwargs[key] = int(value)
        return cls(kind, **kwargs)  # type: ignore[arg-type]  # validated in __post_init__


@dataclass
class FakeServerConfig:
    """How the fake server behaves. Successful replies leave `latency` s after the request."""

    latency: float = 0.0
    stream_interval: float = 0.0  # seconds between a streamed reply's events
    random_lengths: bool = False  # length uniform in [1, max_tokens] instead of max_tokens
    faults: Sequence[FaultRule] = ()
    model: str = "fake-tiny"
    vocab_size: int = 400
    model_seed: int = 0
    default_max_tokens: int = 16
    port: int = 0  # 0: pick a free port
    max_concurrency: int = 1024  # uvicorn answers 503 beyond this many open connections
