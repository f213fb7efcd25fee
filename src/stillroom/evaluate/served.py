"""The models eval runs, as each one's own process loads them (evaluate/workers.py): a
student or the local teacher, scoring labels or generating text. Each serves one batch at a
time for the timing rounds and, for a student, predicts every test item for quality.

Everything these need is imported here, at the top: a model's process imports this module
before it reads the memory level the model's cost is counted from, so code is not counted
as the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stillroom.evaluate.efficiency import folder_mb
from stillroom.evaluate.topk import mean_topk_kl
from stillroom.teachers.local import LocalTeacher
from stillroom.train.data import LabelExample, collate_labels
from stillroom.train.labels import label_logits, label_token_ids
from stillroom.train.students import load_student

if TYPE_CHECKING:
    from stillroom.config import HarvestConfig
    from stillroom.teacher_config import LocalTeacherConfig
    from stillroom.teachers.base import TeacherRequest


def weights_mb(model: Any) -> float:
    """Parameters and buffers as held in memory, in their own dtype; a tied weight once."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def _teacher_info(lm: Any, dtype: str) -> dict[str, Any]:
    folder = Path(lm.name_or_path)
    return {
        "params": sum(p.numel() for p in lm.parameters()),
        "disk_mb": folder_mb(folder) if folder.is_dir() else 0.0,
        "dtype": dtype,
        "weights_mb": weights_mb(lm),
    }


def _student_info(student: Any, folder: Path, dtype: str) -> dict[str, Any]:
    return {
        "params": student.params_student,
        "disk_mb": folder_mb(folder),
        "dtype": dtype,
        "weights_mb": weights_mb(student.model),
    }


class LabelStudent:
    """A student scoring task.candidates after each item's text: (B, C) log-probs."""

    def __init__(
        self, folder: Path, dtype: str, candidates: list[str], texts: list[str], batch: int
    ) -> None:
        student = load_student(folder, dtype)
        self.model, self.tok = student.model.eval(), student.tokenizer
        self.label_ids = label_token_ids(self.tok, tuple(candidates))
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        self.blank = np.zeros(len(candidates), np.float32)
        self.texts, self.batch = texts, batch
        self.info = _student_info(student, folder, dtype)

    def run(self, chunk: Sequence[str]) -> np.ndarray:
        group = [LabelExample(np.asarray(self.tok(t)["input_ids"]), self.blank, -1) for t in chunk]
        with torch.inference_mode():
            logits = label_logits(self.model, collate_labels(group, self.pad), self.label_ids,
                                  self.pad)  # fmt: skip
            return torch.log_softmax(logits, -1).numpy()  # (B, C)

    def predict(self) -> np.ndarray:
        """(N, C) label log-probs for every test text."""
        texts, b = self.texts, self.batch
        return np.concatenate([self.run(texts[i : i + b]) for i in range(0, len(texts), b)])


class LabelTeacher:
    """The local teacher scoring the same candidates after its few-shot prompts. Its answers
    come from the harvest; it is loaded here to be timed."""

    def __init__(self, local: LocalTeacherConfig, candidates: list[str], batch: int) -> None:
        self.teacher = LocalTeacher.load(local.model, dtype=local.dtype, batch_size=batch)
        self.candidates = candidates
        self.info = _teacher_info(self.teacher.runtime.lm, local.dtype)

    def run(self, chunk: Sequence[str]) -> Any:
        return self.teacher.score_batch(list(chunk), self.candidates)

    def predict(self) -> None:
        return None


class TextTeacher:
    """The local teacher answering test prompts through the loop that serves local models."""

    def __init__(self, local: LocalTeacherConfig, batch: int) -> None:
        self.runner = LocalTeacher.load(local.model, dtype=local.dtype, batch_size=batch)
        self.info = _teacher_info(self.runner.runtime.lm, local.dtype)

    def run(self, chunk: Sequence[TeacherRequest]) -> Any:
        return self.runner.generate(list(chunk))

    def predict(self) -> None:
        return None


class TextStudent:
    """A student answering greedily through the same loop; `predict` gives its answers to
    every test prompt and its mean top-k KL to the teacher (or why there is none)."""

    def __init__(
        self, cfg: HarvestConfig, folder: Path, requests: list[TeacherRequest], batch: int
    ) -> None:
        dtype = cfg.eval.student_dtype
        self.student = load_student(folder, dtype)
        self.runner = LocalTeacher(self.student.model, self.student.tokenizer, name=str(folder),
                                   batch_size=batch)  # fmt: skip
        self.cfg, self.requests, self.batch = cfg, requests, batch
        self.info = _student_info(self.student, folder, dtype)

    def run(self, chunk: Sequence[TeacherRequest]) -> Any:
        return self.runner.generate(list(chunk))

    def predict(self) -> tuple[list[str], float | None, str | None]:
        answers: list[str] = []
        for i in range(0, len(self.requests), self.batch):
            answers += [c.choices[0].text for c in self.run(self.requests[i : i + self.batch])]
        with torch.inference_mode():
            kl, note = mean_topk_kl(self.cfg, self.student)
        return answers, None if kl is None else round(kl, 4), note
