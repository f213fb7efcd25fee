"""The teacher's top-k on answers the student wrote: scored once, stored, paid once.

On-policy distillation asks the teacher, at every step, what it would have put at each
token of the student's own answers. A scoring call sends the whole sequence (prompt, then
the student's answer) and reads the teacher's distribution at every answer token: a local
teacher in this process (`LocalTeacher.sequence_logprobs`), or an OpenAI-compatible server
through `completions` with the prompt as token ids, `echo`, `max_tokens: 0` and `logprobs`
(what `stillroom serve` and vLLM answer; top-k 20 at most there).

Every call goes through the run's harvest store (`teacher_scores`) and its budget:
- a call is keyed by (teacher model, k, token ids, where the answer starts); a key already
  stored is never sent again, so a training run resumed after `kill -9` re-asks nothing it
  was answered (its samples are seeded by step, so a resumed run writes the same answers);
- before a batch is sent, each call's cost (every token is an input token) is reserved in
  the store, as the harvest does; a run killed in flight leaves those reservations, which
  count as spent for good, since the teacher may have billed them;
- `cost.budget_usd` caps the store's whole spend, harvest and scoring together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from stillroom.errors import BudgetExceeded, ConfigError, TeacherReplyError
from stillroom.harvest.cost import Budget
from stillroom.harvest.signals import encode_topk
from stillroom.harvest.store import RunStore
from stillroom.prices import Price

if TYPE_CHECKING:
    from stillroom.teacher_config import TeacherConfig
    from stillroom.teachers.local import LocalTeacher
    from stillroom.teachers.openai_compat import OpenAITeacher


@dataclass
class ScoredAnswer:
    """The teacher's top-k at each answer token: row j predicts answer token j."""

    ids: np.ndarray  # (m, k) int64 teacher ids
    logprobs: np.ndarray  # (m, k) float32


class Scorer(Protocol):
    model: str

    def score(self, sequences: list[list[int]], starts: list[int], k: int) -> list[ScoredAnswer]:
        """Teacher top-k for tokens starts[i]..end of each sequence (starts[i] >= 1)."""
        ...


class LocalScorer:
    """A local teacher, in this process."""

    def __init__(self, teacher: LocalTeacher) -> None:
        self.teacher = teacher
        self.model = str(teacher.model)

    def score(self, sequences: list[list[int]], starts: list[int], k: int) -> list[ScoredAnswer]:
        out = self.teacher.sequence_logprobs(sequences, k)
        # Row t of a TextLogprobs predicts token t + 1: answer token j sits at start + j.
        return [
            ScoredAnswer(o.top_ids[s - 1 : len(o.ids) - 1], o.top_logprobs[s - 1 : len(o.ids) - 1])
            for o, s in zip(out, starts, strict=True)
        ]


class ApiScorer:
    """An OpenAI-compatible server that scores token-id prompts with `echo`."""

    def __init__(self, teacher: OpenAITeacher) -> None:
        import asyncio

        self.teacher = teacher
        self.model = teacher.model
        # One loop for the scorer's life: the client's pooled connections belong to it.
        self.loop = asyncio.new_event_loop()

    def score(self, sequences: list[list[int]], starts: list[int], k: int) -> list[ScoredAnswer]:
        import asyncio

        async def all_of() -> list[dict[str, Any]]:
            gate = asyncio.Semaphore(self.teacher.concurrency)

            async def one(ids: list[int]) -> dict[str, Any]:
                async with gate:
                    return await self.teacher.echo_ids(ids, k)

            return await asyncio.gather(*(one(s) for s in sequences))

        replies = self.loop.run_until_complete(all_of())
        return [
            parse_echo(r, seq, start, k)
            for r, seq, start in zip(replies, sequences, starts, strict=True)
        ]


def parse_echo(reply: dict[str, Any], ids: list[int], start: int, k: int) -> ScoredAnswer:
    """A `completions` echo reply's top-k at tokens start.., as teacher ids. The server must
    have read exactly the ids sent (tokens named "token_id:N"); anything else is refused."""
    try:
        lp = reply["choices"][0]["logprobs"]
        tokens, tops = lp["tokens"], lp["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise TeacherReplyError(
            "the scoring reply has no choices[0].logprobs.tokens / top_logprobs; the teacher "
            "must answer completions with echo and logprobs (stillroom serve, vLLM)"
        ) from None
    echoed = [_token_id(t) for t in tokens[: len(ids)]]
    if echoed != list(ids):
        raise TeacherReplyError(
            "the teacher did not echo the token ids it was sent (it needs token-id prompts "
            "and return_tokens_as_token_ids, as stillroom serve and vLLM support)"
        )
    rows = [sorted(tops[t].items(), key=lambda kv: -kv[1])[:k] for t in range(start, len(ids))]
    out_ids = np.full((len(rows), k), 0, np.int64)
    out_lp = np.full((len(rows), k), -np.inf, np.float32)
    for r, row in enumerate(rows):
        for c, (token, value) in enumerate(row):
            out_ids[r, c], out_lp[r, c] = _token_id(token), value
    return ScoredAnswer(out_ids, out_lp)


def _token_id(token: Any) -> int:
    if isinstance(token, str) and token.startswith("token_id:"):
        return int(token.removeprefix("token_id:"))
    raise TeacherReplyError(f"token {token!r} is not named by id ('token_id:N')")


def make_scorer(teacher: TeacherConfig) -> Scorer:
    """The configured teacher as a scorer: loaded here when local, else its API."""
    from stillroom.teacher_config import ApiTeacherConfig, LocalTeacherConfig

    if isinstance(teacher, LocalTeacherConfig):
        from stillroom.teachers.local import LocalTeacher

        return LocalScorer(
            LocalTeacher.load(teacher.model, dtype=teacher.dtype, batch_size=teacher.batch_size)
        )
    if isinstance(teacher, ApiTeacherConfig):
        from stillroom.teachers.openai_compat import OpenAITeacher

        return ApiScorer(OpenAITeacher(teacher))
    raise ConfigError(
        "config",
        [
            f"train.objective: on_policy scores with the teacher as it trains; teacher.kind "
            f"{teacher.kind!r} cannot score token sequences. Use kind: local, or kind: api "
            "pointing at a server that answers completions with echo and logprobs "
            "(stillroom serve, vLLM)"
        ],
    )


class ScoreCache:
    """Scoring calls through the store: stored ones are read back, new ones are reserved
    against the budget, sent in one batch, and stored with their cost."""

    def __init__(
        self, store: RunStore, scorer: Scorer, k: int, price: Price, budget_usd: float | None
    ) -> None:
        self.store, self.scorer, self.k, self.price = store, scorer, k, price
        self.budget_usd = budget_usd
        self.calls_made = self.tokens_paid = 0  # by this process
        self.calls_reused = 0

    def key(self, ids: list[int], start: int) -> str:
        material = json.dumps([self.scorer.model, self.k, start, ids], separators=(",", ":"))
        return hashlib.sha256(material.encode()).hexdigest()

    def blobs(self, sequences: list[list[int]], starts: list[int]) -> list[bytes]:
        """The teacher's top-k of each sequence's answer, as a signals blob (teacher ids)."""
        keys = [self.key(s, st) for s, st in zip(sequences, starts, strict=True)]
        found = self.store.stored_scores(keys)
        todo = [i for i, key in enumerate(keys) if key not in found]
        self.calls_reused += len(keys) - len(todo)
        if todo:
            found |= self._pay(
                [keys[i] for i in todo], [sequences[i] for i in todo], [starts[i] for i in todo]
            )
        return [found[key] for key in keys]

    def _pay(self, keys: list[str], seqs: list[list[int]], starts: list[int]) -> dict[str, bytes]:
        costs = [self.price.cost(len(s), 0) for s in seqs]
        totals = self.store.totals()
        budget = Budget(self.budget_usd, totals.cost_usd + totals.orphaned_usd)
        if not budget.try_reserve(sum(costs)):
            raise BudgetExceeded(
                f"cost.budget_usd: the next {len(keys)} scoring calls (${sum(costs):.4f}) would "
                f"pass the budget of ${self.budget_usd:.4f} (${budget.spent:.4f} spent); raise "
                "it and run `stillroom train --resume` to continue"
            )
        for key, usd in zip(keys, costs, strict=True):
            self.store.reserve(key, usd)
        scored = self.scorer.score(seqs, starts, self.k)
        rows = []
        for key, seq, start, ans, usd in zip(keys, seqs, starts, scored, costs, strict=True):
            rows.append((key, len(seq), len(seq) - start, encode_topk(ans.ids, ans.logprobs), usd))
        self.store.write_scores(self.scorer.model, rows)
        self.calls_made += len(rows)
        self.tokens_paid += sum(len(s) for s in seqs)
        return {key: blob for key, _, _, blob, _ in rows}
