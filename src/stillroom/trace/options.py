"""The options of a trace, checked together before any model loads or query is paid for."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from stillroom.options import VerbOptions
from stillroom.runtime.gemma import DEFAULT_TEACHER

# 310 varied questions (explain, compare, plan, write, reason, code) shipped with the package
DEFAULT_QUESTIONS = Path(__file__).with_name("questions.jsonl")


class TraceMode(StrEnum):
    GENERATE = "generate"  # score the suspect's answers to our prompts
    READ = "read"  # its argmax predictions on our texts
    # its next-token distribution on unwatermarked texts (whole, or an API's top-k by
    # echo), or an API's top-k on its own answers
    MASS = "mass"


class ServedBy(StrEnum):
    # likelihood of served answers vs their twins: open weights, or an API's prompt
    # log-probs (echo)
    LIKELIHOOD = "likelihood"
    ANSWERS = "answers"  # an API: are its greedy answers closer to the served ones


def is_api(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


class TraceOptions(VerbOptions):
    verb: ClassVar[str] = "trace"
    suspect: str  # a model folder, or an OpenAI-compatible base URL
    key_file: Path | None = None
    radioactivity: bool = True  # off: the key only marks the served answers' twins
    mode: TraceMode = TraceMode.GENERATE
    texts: Path | None = None  # read/mass: JSONL of our texts
    text_field: str = "text"
    baseline: str | None = None  # mass/served: a model that never saw watermarked text
    served: str | None = None  # the gateway database that logged what was served
    accounts: list[str] = Field(default_factory=list)
    replay: str = DEFAULT_TEACHER  # the gateway's model, to draw twins of served answers
    replay_dtype: str = "float32"
    replays: Path | None = None  # keep the twins here and reuse them
    twins: int = Field(3, ge=1, le=16)  # fresh draws each served answer is compared with
    served_limit: int = 0  # 0: every served answer
    served_by: ServedBy | None = None  # default: likelihood for a folder, answers for an API
    candidates: dict[str, str] = Field(
        default_factory=dict
    )  # possible parents, name -> folder or URL
    references: dict[str, str] = Field(default_factory=dict)  # comparable non-parents
    prompts: Path = DEFAULT_QUESTIONS  # JSONL or text: what the suspect is asked
    prompt_field: str = "question"
    model: str | None = None  # an API suspect's model name
    api_key: str | None = None
    tokenizer: str = DEFAULT_TEACHER  # the watermarked teacher's tokenizer
    budget: int = 2000  # most queries (or texts read)
    target_p: float = 1e-6
    max_tokens: int = 128
    temperature: float = Field(0.8, gt=0, le=2)  # the suspect samples its answers at
    top_logprobs: int = Field(20, ge=1, le=20)  # mass through an API: top-k asked for
    match_prompts: int = 200
    match_tokens: int = 32
    alpha: float = 0.01
    probes: bool = True
    seed: int = 0

    @property
    def scoring(self) -> ServedBy:
        default = ServedBy.ANSWERS if is_api(self.suspect) else ServedBy.LIKELIHOOD
        return self.served_by or default

    @property
    def radioactive(self) -> bool:
        return self.key_file is not None and self.radioactivity

    @property
    def asks(self) -> bool:
        """Whether the suspect is asked the prompts: for output match, or for generating
        radioactivity."""
        generating = self.mode == TraceMode.GENERATE or (
            self.mode == TraceMode.MASS and is_api(self.suspect) and self.texts is None
        )
        return bool(self.candidates) or (self.radioactive and generating)

    def combination_problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if self.key_file is None and not self.candidates and self.served is None:
            found.append(
                ("options", "nothing to test: give {key_file} (radioactivity), {served} and "
                 "{accounts} (served answers) and/or {candidates} and {references} (output "
                 "match)")
            )  # fmt: skip
        reading = self.mode != TraceMode.GENERATE and self.radioactive
        # Through an API, mass mode reads its answers' log-probs when no texts are given.
        api_mass = self.mode == TraceMode.MASS and is_api(self.suspect)
        if reading and self.texts is None and not api_mass:
            found.append(
                ("texts", "{mode} " + self.mode + " reads texts: give teacher answers (JSONL)")
            )
        if reading and is_api(self.suspect) and not api_mass:
            found.append(
                (
                    "mode",
                    f"{self.mode} needs the suspect's weights; for an API use generate or mass",
                )
            )
        if self.baseline is not None and self.mode != TraceMode.MASS and self.served is None:
            found.append(
                ("baseline", "is for {mode} mass or {served}: drop {baseline} or add one of them")
            )
        if (
            self.baseline is not None
            and self.served is not None
            and self.scoring == ServedBy.ANSWERS
            and self.mode != TraceMode.MASS
        ):
            found.append(
                (
                    "baseline",
                    "nets out another model's likelihood, and {served_by} answers has none: "
                    "drop {baseline}",
                )
            )
        if self.accounts and self.served is None:
            found.append(("accounts", "picks whose served answers to test: add {served}"))
        return found
