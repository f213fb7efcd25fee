"""On-policy batches (`train.objective: on_policy`): the student writes, the teacher scores.

GKD (Agarwal et al. 2024, "On-Policy Distillation of Language Models") trains a student on
its own samples: for each prompt of a batch the student samples an answer, the teacher
gives its distribution at every token of that answer, and the student minimises a
divergence to it there (reverse KL or JSD(beta) in the paper; `train.divergence`). With
probability lambda (`train.on_policy.lambda`) a batch is turned into such a batch; the others
train on the teacher's stored answers, as off-policy KD.

The on-policy batch reuses the off-policy batch's prompts (so the data order, and a resumed
run's, stays the one of the stored harvest) and the same collation: the teacher's top-k
arrive as a signals blob in teacher ids, exactly as a harvested answer's do, and ids the
student cannot represent move their mass into the rest bucket. The student's samples carry
no hard-label term: cross-entropy on its own tokens would teach it nothing it did not
already write.

Samples are seeded by (train.seed, epoch, batch, row): a run resumed from a checkpoint
redraws the very answers it drew before it was killed, so their scoring calls are read back
from the store instead of being paid again.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch

from stillroom.config import HarvestConfig
from stillroom.harvest.store import RunStore
from stillroom.prices import price_for
from stillroom.runtime.decoding import Decoding, decode
from stillroom.runtime.model import LocalModel
from stillroom.teachers.base import GenerationParams
from stillroom.train.data import Batch, Example, TeacherToStudent, collate
from stillroom.train.students import Student
from stillroom.train.teacher_scores import ScoreCache, make_scorer


class OnPolicy:
    """Turns stored-answer batches into batches of the student's own answers."""

    def __init__(
        self,
        *,
        lmbda: float,
        temperature: float,
        max_new_tokens: int,
        stop: tuple[str, ...],
        seed: int,
        tokenizer: Any,
        to_teacher: np.ndarray | None,
        mapping: TeacherToStudent,
        cache: ScoreCache,
        pad_id: int,
    ) -> None:
        self.lmbda, self.seed = lmbda, seed
        self.params = GenerationParams(max_tokens=max_new_tokens, temperature=temperature,
                                       stop=stop)  # fmt: skip
        self.tokenizer, self.to_teacher = tokenizer, to_teacher
        self.mapping, self.cache, self.pad_id = mapping, cache, pad_id
        self.batches = self.answer_tokens = 0  # on-policy batches built, tokens sampled

    def counts(self) -> dict[str, int]:
        """Batches the student wrote, their tokens, and the teacher's scoring calls this
        process paid for or read back from the store."""
        return {
            "own_batches": self.batches,
            "own_tokens": self.answer_tokens,
            "scoring_calls_paid": self.cache.calls_made,
            "scoring_tokens_paid": self.cache.tokens_paid,
            "scoring_calls_reused": self.cache.calls_reused,
        }

    def chooses(self, epoch: int, index: int) -> bool:
        """Whether batch `index` of `epoch` is written by the student (seeded, so a resumed
        run makes the same choice)."""
        if self.lmbda >= 1.0:
            return True
        return random.Random(f"{self.seed}:{epoch}:{index}:on-policy").random() < self.lmbda

    def batch(self, model: Any, stored: Batch, epoch: int, index: int) -> Batch:
        """The student's answers to `stored`'s prompts, with the teacher's top-k on them."""
        prompts = prompts_of(stored)
        answers = self._sample(model, prompts, epoch, index)
        # The teacher reads its own prompt before the student's answer (they differ when the
        # student reads task.student_template).
        theirs = [
            p if t is None else t.tolist()
            for p, t in zip(prompts, stored.teacher_prompts or [None] * len(prompts), strict=True)
        ]
        rows = [(p, t, a) for p, t, a in zip(prompts, theirs, answers, strict=True) if a]
        sequences = [self._teacher_ids(t + a) for _, t, a in rows]
        blobs = self.cache.blobs(sequences, [len(t) for _, t, _ in rows])
        group = [
            Example(np.asarray(p + a, np.int64), len(p), blob)
            for (p, _, a), blob in zip(rows, blobs, strict=True)
        ]
        self.batches += 1
        self.answer_tokens += sum(len(a) for _, _, a in rows)
        return collate(group, self.mapping, self.pad_id)

    def _sample(
        self, model: Any, prompts: list[list[int]], epoch: int, index: int
    ) -> list[list[int]]:
        runtime = LocalModel(model, self.tokenizer)  # puts the model in eval mode
        seeds = [_row_seed(self.seed, epoch, index, row) for row in range(len(prompts))]
        how = Decoding(self.params, runtime.eos_token_ids, self._text, None, logprobs=False)
        try:
            with torch.inference_mode():
                rows = decode(runtime, prompts, seeds, how)
        finally:
            model.train()
        return [list(r.ids) for r in rows]

    def _text(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids))

    def _teacher_ids(self, student_ids: list[int]) -> list[int]:
        if self.to_teacher is None:
            return list(student_ids)
        return [int(i) for i in self.to_teacher[np.asarray(student_ids, np.int64)]]


def build_on_policy(
    cfg: HarvestConfig, student: Student, mapping: TeacherToStudent, pad_id: int, store: RunStore
) -> OnPolicy:
    """The on-policy batch maker for a config: its teacher as a scorer, through the store."""
    op = cfg.train.on_policy
    cache = ScoreCache(
        store,
        make_scorer(cfg.teacher),
        op.top_k,
        price_for(cfg.teacher.model, cfg.teacher.kind, cfg.cost),
        cfg.cost.budget_usd,
    )
    store.orphan_reservations()  # a killed run's calls in flight count as spent
    return OnPolicy(
        lmbda=op.lmbda,
        temperature=op.temperature,
        max_new_tokens=op.max_new_tokens or cfg.generation.max_tokens or 256,
        stop=tuple(cfg.generation.stop),
        seed=cfg.train.seed,
        tokenizer=student.tokenizer,
        to_teacher=student.to_teacher,
        mapping=mapping,
        cache=cache,
        pad_id=pad_id,
    )


def prompts_of(batch: Batch) -> list[list[int]]:
    """Each row's prompt: the ids before the first position that predicts an answer token."""
    out = []
    for row in range(batch.input_ids.shape[0]):
        first = int(batch.loss_mask[row].nonzero()[0, 0])  # predicts answer token 0
        out.append(batch.input_ids[row, : first + 1].tolist())
    return out


def _row_seed(seed: int, epoch: int, index: int, row: int) -> int:
    material = f"{seed}|{epoch}|{index}|{row}|on-policy".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big") >> 1
