"""`run_trace`: did a suspect model learn from our outputs? One call, every test it asks for.

Tests, each run when its options are given:
- radioactivity (`key_file`): green tokens of our watermark key in the suspect's answers
  (`mode` generate), in its predictions on our texts (read), or in its next-token
  distribution on unwatermarked texts (mass);
- served answers (`served` + `accounts`): does the suspect prefer what those accounts were
  served over fresh twins of each answer (`served_by` likelihood or answers);
- output match (`candidates`, `references`): which possible parent its greedy answers follow;
- identity probes (`probes`): who it says made it.
Every option problem is found before a model loads or a query is paid for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from stillroom.trace import steps
from stillroom.trace.options import TraceOptions
from stillroom.trace.steps import Progress


@dataclass
class Verdict:
    """Each test's result with its plain-words `statement`; None where it did not run."""

    suspect: str
    served: dict[str, Any] | None = None
    radioactivity: dict[str, Any] | None = None
    output_match: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def run_trace(
    options: TraceOptions,
    progress: Progress | None = None,
    checkpoint: Callable[[Verdict], None] | None = None,
) -> Verdict:
    """Every test `options` asks for, in order served, radioactivity, output match, identity;
    `progress` gets a line per look and per model loaded, `checkpoint` the verdict so far
    after each finished test and each look (a running test is marked "running")."""
    from stillroom.trace.suspects import open_suspect

    say = progress or (lambda line: None)
    o = options
    asked = steps.prompts_to_ask(o, say) if o.asks else []
    served = steps.read_served_checked(o) if o.served is not None else None
    who = open_suspect(o.suspect, model=o.model, api_key=o.api_key)
    verdict = Verdict(suspect=getattr(who, "name", o.suspect))
    keep = checkpoint or (lambda v: None)

    def running(part: dict[str, Any]) -> None:
        verdict.radioactivity = part
        keep(verdict)

    if served is not None:
        verdict.served = steps.served_answers(who, o, *served, say)
        keep(verdict)
    if o.radioactive:
        verdict.radioactivity = steps.radioactivity(who, o, asked, say, running)
        keep(verdict)
    if o.candidates:
        verdict.output_match = steps.output_match(who, o, asked, say)
        keep(verdict)
    if o.probes:
        verdict.identity = steps.identity(who, o.seed)
    return verdict
