"""Teachers: an OpenAI-compatible API (black box) or a local Hugging Face model (white box).

`BUILDERS` maps each `teacher.kind` (stillroom.teacher_config) to what builds its teacher:
a new kind registers here. Builders import their module when called, so torch loads only
for a local teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stillroom.teacher_config import ApiTeacherConfig, LocalTeacherConfig, TeacherConfig
from stillroom.teachers.base import Teacher


def _api_teacher(cfg: ApiTeacherConfig) -> Teacher:
    from stillroom.teachers.openai_compat import OpenAITeacher

    return OpenAITeacher(cfg)


def _local_teacher(cfg: LocalTeacherConfig) -> Teacher:
    from stillroom.teachers.local import LocalTeacher

    return LocalTeacher.load(cfg.model, dtype=cfg.dtype, batch_size=cfg.batch_size)


# teacher.kind -> builder, called with that kind's config model
BUILDERS: dict[str, Callable[[Any], Teacher]] = {
    "api": _api_teacher,
    "local": _local_teacher,
}


def make_teacher(cfg: TeacherConfig) -> Teacher:
    """Build the teacher a config names."""
    return BUILDERS[cfg.kind](cfg)
