"""Teachers: an OpenAI-compatible API (black box) or a local Hugging Face model (white box)."""

from __future__ import annotations

from stillroom.config import TeacherConfig
from stillroom.teachers.base import Teacher


def make_teacher(cfg: TeacherConfig) -> Teacher:
    """Build the teacher a config names. torch is imported only for local teachers."""
    if cfg.kind == "api":
        from stillroom.teachers.openai_compat import OpenAITeacher

        return OpenAITeacher(cfg)
    from stillroom.teachers.local import LocalTeacher

    return LocalTeacher.load(cfg.model, dtype=cfg.dtype, batch_size=cfg.batch_size)
