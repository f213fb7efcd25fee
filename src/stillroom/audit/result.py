"""What an audit measures and decides, as data: shared by the run that makes it and the
report that shows it, so neither has to import the other to name it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from stillroom.audit.ingest import IngestStats
from stillroom.audit.links import Links
from stillroom.audit.score import Calibration


@dataclass
class Measured:
    """One log's units with their features, before scoring."""

    units: dict[str, dict[str, Any]]  # unit -> features (+ "members")
    links: Links
    samples: dict[str, list[str]]  # account -> sampled prompts
    stats: IngestStats
    account_requests: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)  # first and last request time measured


class FlaggedUnit(TypedDict):
    """One flagged unit: an account, or accounts the audit joined as one actor."""

    unit: str
    accounts: list[str]
    score: float
    evidence: list[str]  # plain words, strongest first
    examples: list[str]  # sampled prompts
    features: dict[str, Any]  # the scored ones and a few for context
    first_flagged: NotRequired[float]  # incremental runs: log time of the first flag


@dataclass
class AuditResult:
    measured: Measured
    calibration: Calibration
    threshold: float
    fpr: float
    scores: dict[str, float]
    flagged: list[FlaggedUnit]  # strongest first
    warnings: list[str] = field(default_factory=list)  # where the rate asked is not supported

    def flagged_accounts(self) -> set[str]:
        return {a for f in self.flagged for a in f["accounts"]}
