"""Checks before paying: every problem of a classification task that can be known before the
first teacher call, found at once and reported together, each with its config key and fix.

Why labels must be one token: the teacher scores a candidate (`task.label_prefix + label`) as
the total log-prob of all its tokens, but the student answers with a single next token
(`stillroom.train.labels`). A label of several tokens would be trained and judged on its
first token only, and two labels sharing a first token could not be told apart. So each
candidate must be exactly one token, and a different one, in the teacher's tokenizer and in
the student's when it has its own.

Gold labels are read from the prompt file, so a value outside `task.labels` is named by
file:line here rather than an hour into training.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from stillroom.config import HarvestConfig, TaskConfig
from stillroom.errors import ConfigError, InputError
from stillroom.harvest.prompts import PromptItem
from stillroom.teacher_config import ApiTeacherConfig

SOURCE = "checks before the first teacher call"
_SHOWN = 3  # rows named per problem


class TaskProblems(ConfigError):
    """The problems found, each naming its key and fix, then what could not be checked."""

    def __init__(self, problems: list[str], unchecked: list[str]) -> None:
        super().__init__(SOURCE, problems)
        self.unchecked = unchecked
        if unchecked:
            self.args = (self.args[0] + "".join(f"\n  (not checked: {u})" for u in unchecked),)


def check_task(
    cfg: HarvestConfig, items: list[PromptItem], *, teacher_tokenizer: Any | None = None
) -> list[str]:
    """Raise TaskProblems (a ConfigError) listing every problem found; return notes (what
    could not be checked, and warnings that do not stop a run). For a generation task only
    the API teacher's `folder` is checked."""
    task = cfg.task
    # an API teacher's local folder, which training maps the student's ids through
    served = cfg.teacher.folder_problems() if isinstance(cfg.teacher, ApiTeacherConfig) else []
    if task.kind != "classify":
        if served:
            raise TaskProblems(served, [])
        return []
    problems = [*served, *label_problems(task), *setup_problems(cfg)]
    tokenizers, unchecked = _tokenizers(cfg, teacher_tokenizer)
    for role, tokenizer in tokenizers:
        problems += token_problems(task, tokenizer, role)
    problems += prompt_end_problems(task, items)
    wrong_gold, warnings = gold_problems(task, items)
    problems += wrong_gold
    if problems:
        raise TaskProblems(problems, unchecked)
    return [f"not checked: {u}" for u in unchecked] + warnings


def label_problems(task: TaskConfig) -> list[str]:
    """What the label list alone shows: repeats, blanks, stray whitespace."""
    problems = []
    for label, n in Counter(task.labels).items():
        if n > 1:
            problems.append(f"task.labels: {label!r} is listed {n} times; list each label once")
    for i, label in enumerate(task.labels):
        if not label.strip():
            problems.append(f"task.labels[{i}]: a label is empty; give it a word")
        elif label != label.strip():
            problems.append(
                f"task.labels[{i}]: {label!r} has leading or trailing whitespace; write "
                f"{label.strip()!r} (task.label_prefix {task.label_prefix!r} goes before it)"
            )
    return problems


def setup_problems(cfg: HarvestConfig) -> list[str]:
    """Settings a classification harvest cannot work with."""
    problems = []
    if not cfg.teacher.is_local:
        problems.append(
            f"teacher.kind: {cfg.teacher.kind} cannot score task.labels: an OpenAI-compatible "
            "API returns no log-probs of given candidates, so the harvest would generate text "
            "and training would find no label log-probs; use teacher.kind: local"
        )
    if cfg.prompts.messages_field or cfg.prompts.system is not None:
        key = "prompts.messages_field" if cfg.prompts.messages_field else "prompts.system"
        problems.append(
            f"{key}: classification scores plain prompts, not chat messages; give "
            "prompts.field or prompts.template without prompts.system"
        )
    if cfg.samples_per_prompt > 1:
        problems.append(
            f"samples_per_prompt: {cfg.samples_per_prompt}: scoring the labels gives the same "
            "answer every time, so each extra sample is a repeated call; set it to 1"
        )
    return problems


def token_problems(task: TaskConfig, tokenizer: Any, role: str) -> list[str]:
    """Candidates that are not exactly one token, or share their first token, in `tokenizer`."""
    problems = []
    by_first: dict[int, list[str]] = defaultdict(list)
    for i, (label, candidate) in enumerate(zip(task.labels, task.candidates, strict=True)):
        if not label.strip() or label != label.strip():
            continue  # label_problems names it; its tokens would say the same again
        ids = tokenizer(candidate, add_special_tokens=False)["input_ids"]
        if not ids:
            problems.append(f"task.labels[{i}]: {candidate!r} has no tokens; give it a word")
            continue
        if label not in by_first[ids[0]]:
            by_first[ids[0]].append(label)
        if len(ids) > 1:
            pieces = [tokenizer.decode([t]) for t in ids]
            problems.append(
                f"task.labels[{i}]: {label!r} is {len(ids)} tokens for the {role}'s tokenizer "
                f"(candidate {candidate!r} -> {pieces}); the student answers with one token, "
                f"so only {pieces[0]!r} would count; rename the label to one word that is a "
                "single token, in task.labels and in the gold column"
            )
    for first, labels in by_first.items():
        if len(labels) > 1:
            problems.append(
                f"task.labels: {labels} start with the same token "
                f"{tokenizer.decode([first])!r} for the {role}'s tokenizer, so the student "
                "cannot tell them apart; give each label a different first word"
            )
    return problems


def prompt_end_problems(task: TaskConfig, items: list[PromptItem]) -> list[str]:
    """A prompt ending in whitespace before a prefix starting with it: the teacher would
    score "Category:  food", two spaces, a text it has rarely seen."""
    if not task.label_prefix[:1].isspace():
        return []
    problems = []
    spaced = [it for it in items if it.prompt is not None and it.prompt[-1:].isspace()]
    if spaced:
        problems.append(
            f"prompts: {len(spaced)} of {len(items)} prompts end with whitespace (first: "
            f"{_rows(spaced)}) and task.label_prefix {task.label_prefix!r} adds another before "
            "each label; end the prompts (prompts.field or prompts.template) without trailing "
            "whitespace"
        )
    if (task.student_input or "")[-1:].isspace():
        problems.append(
            f"task.student_template ends with whitespace and task.label_prefix "
            f"{task.label_prefix!r} adds another before each label; remove the trailing "
            "whitespace from task.student_template"
        )
    return problems


def gold_problems(task: TaskConfig, items: list[PromptItem]) -> tuple[list[str], list[str]]:
    """(gold values outside task.labels, by value with the first rows; notes on labels that
    no row has as its gold label)."""
    if task.gold_field is None:
        return [], []
    wrong: dict[str, list[PromptItem]] = defaultdict(list)
    seen: Counter[str] = Counter()
    for item in items:
        if task.gold_field not in item.fields:
            continue  # a transfer-set row without gold (prompts.transfer_path)
        value = str(item.fields[task.gold_field])
        if value in task.labels:
            seen[value] += 1
        else:
            wrong[value].append(item)
    problems = []
    for value, rows in wrong.items():
        near = [lb for lb in task.labels if lb.strip().lower() == value.strip().lower()]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        problems.append(
            f"task.gold_field {task.gold_field!r}: {value!r} is not one of task.labels{hint}, "
            f"in {len(rows)} row{'s' if len(rows) != 1 else ''} ({_rows(rows)}); correct those "
            "rows, or add the value to task.labels"
        )
    notes = [
        f"task.labels: {label!r} is the gold label of no prompt row; the student and the "
        "baseline see no example of it"
        for label in task.labels
        if not seen[label]
    ]
    return problems, notes


def _rows(items: list[PromptItem]) -> str:
    shown = ", ".join(it.where or it.id for it in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _tokenizers(
    cfg: HarvestConfig, teacher_tokenizer: Any | None
) -> tuple[list[tuple[str, Any]], list[str]]:
    """[(role, tokenizer)] to check the labels in, and notes on what could not be loaded."""
    from stillroom.runtime.loading import load_tokenizer

    found: list[tuple[str, Any]] = []
    notes: list[str] = []
    if teacher_tokenizer is None:
        # An API may serve a model whose tokenizer is on this machine (our own `serve`).
        try:
            teacher_tokenizer = load_tokenizer(cfg.teacher.model)
        except InputError as e:
            notes.append(
                f"the labels' tokens in the teacher's tokenizer: {e}"
                if cfg.teacher.is_local
                else f"the labels' tokens in the teacher's tokenizer: teacher.kind "
                f"{cfg.teacher.kind} gives none and teacher.model {cfg.teacher.model!r} has no "
                "tokenizer on this machine (repeated and blank labels, prompts and gold labels "
                "were checked)"
            )
    if teacher_tokenizer is not None:
        found.append(("teacher", teacher_tokenizer))
    own = _student_tokenizer_dir(cfg)
    if own is not None:
        try:
            found.append(("student", _load_folder_tokenizer(own)))
        except (OSError, ValueError) as e:
            notes.append(f"the labels' tokens in the student's tokenizer ({own}): {e}")
    return found, notes


def _student_tokenizer_dir(cfg: HarvestConfig) -> Path | None:
    """The student's own tokenizer folder, when it is not the teacher's."""
    student = cfg.train.student
    if student.init == "config" and student.tokenizer != "teacher":
        return Path(student.tokenizer)
    if student.init in ("pretrained", "shrink") and student.path is not None:
        return student.path
    return None


def _load_folder_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)
