"""Where a student starts and which teacher ids it must keep: the folder it is cut from,
and every id the harvest and the task use (a trimmed vocabulary keeps exactly these)."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.config import HarvestConfig
from stillroom.errors import ConfigError, VocabMismatch
from stillroom.harvest.signals import decode_topk
from stillroom.harvest.store import RunStore
from stillroom.teacher_config import ApiTeacherConfig


def teacher_folder(cfg: HarvestConfig) -> Path:
    """The folder the student starts from and whose tokenizer its ids map to: the local
    teacher's; for an API teacher, its `folder` (a local copy of the served model); for
    init: shrink, the open model at student.path."""
    st = cfg.train.student
    if st.init == "shrink" and st.path is not None:
        return Path(st.path)
    if not cfg.teacher.is_local:
        local = cfg.teacher.folder if isinstance(cfg.teacher, ApiTeacherConfig) else None
        if isinstance(cfg.teacher, ApiTeacherConfig) and (bad := cfg.teacher.folder_problems()):
            raise ConfigError("config", bad)
        needs = st.init == "shrink" or (st.init == "config" and st.tokenizer == "teacher")
        if local is None and needs:
            raise ConfigError(
                "config",
                [
                    "train.student: an API teacher has no weights or tokenizer to start from; "
                    "set teacher.folder to a local copy of the served model, use "
                    "student.init: shrink with path: an open model folder to cut down, "
                    "init: pretrained, or init: config with tokenizer: PATH"
                ],
            )
        return Path(local or st.path or ".")
    from stillroom.runtime.gemma import DEFAULT_TEACHER_ALIASES, default_teacher_dir

    if cfg.teacher.model in DEFAULT_TEACHER_ALIASES:
        return default_teacher_dir()
    return Path(cfg.teacher.model)


def harvest_token_ids(store: RunStore, top_k: int | None = None) -> set[int]:
    """Every teacher id the harvest uses: prompts, completions and top-k candidates (the
    `top_k` likeliest at each position when given, else all the harvest kept)."""
    ids: set[int] = set()
    for rec in store.iter_records():
        for blob in (rec["prompt_ids"], rec["token_ids"]):
            if blob is not None:
                ids.update(np.frombuffer(blob, "<i4").tolist())
        if rec["topk"] is not None and rec["token_table"] is None:
            top = decode_topk(rec["topk"]).ids[:, :top_k]
            ids.update(np.unique(top[top >= 0]).tolist())
    return ids


def encode_record(
    tok: Any, request: dict[str, Any], text: str, finish: str | None
) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of one stored call as `tok` reads it: chat messages
    through its chat template, EOS after an answer that stopped on its own."""
    if "messages" in request and getattr(tok, "chat_template", None):
        msgs = [{"role": r, "content": c} for r, c in request["messages"]]
        prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
    else:
        raw = request.get("prompt") or "\n".join(c for _, c in request.get("messages", []))
        p = tok(raw)["input_ids"]
    c = tok(text, add_special_tokens=False)["input_ids"]
    if finish == "stop" and tok.eos_token_id is not None:
        c = [*c, tok.eos_token_id]
    return list(p), list(c)


def harvest_text_ids(store: RunStore, model_dir: Path) -> set[int]:
    """Ids of every stored prompt and answer, tokenized by `model_dir`'s tokenizer exactly
    as the trainer will encode them."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids: set[int] = set(tok.all_special_ids)
    for rec in store.iter_records():
        p, c = encode_record(tok, json.loads(rec["request"]), rec["text"] or "", None)
        ids.update(p)
        ids.update(c)
    return ids


def student_prompt_ids(tok: Any, template: str, fields: dict[str, Any], where: str) -> list[int]:
    """The student's own prompt for a stored row (task.student_template), in `tok`'s ids."""
    try:
        text = template.format_map(fields)
    except KeyError as e:
        raise VocabMismatch(
            f"{where}: task.student_template uses {{{e.args[0]}}}, which the harvest did not "
            "keep; add it to prompts.keep_fields and harvest again"
        ) from None
    return list(tok(text)["input_ids"])


def task_token_ids(cfg: HarvestConfig, teacher_dir: Path, store: RunStore) -> set[int]:
    """Teacher ids a student needs beyond the harvest: a classifier's labels and the literal
    text of its template; a generator's own prompts (task.student_template) as read, and its
    train split's gold answers."""
    template = cfg.task.student_input
    if template is None:
        return set()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    literal = "".join(text for text, _, _, _ in string.Formatter().parse(template))
    ids: set[int] = set(tok(literal)["input_ids"])
    for c in cfg.task.candidates:
        ids.update(tok(c, add_special_tokens=False)["input_ids"])
    if cfg.task.kind == "generate":
        gold = cfg.task.gold_field
        for rec in store.iter_records():
            fields = json.loads(rec["fields"]) if rec["fields"] else {}
            ids.update(student_prompt_ids(tok, template, fields, f"{store.path} {rec['key']}"))
            # The train split's gold answers, so a gold-only baseline is the same student
            # (train.targets: gold); held-out answers stay out of the vocabulary.
            answer = gold_answer_text(fields, gold, rec["text"]) if gold else None
            if answer is not None and rec["split"] == "train":
                ids.update(tok(answer, add_special_tokens=False)["input_ids"])
    return ids


def gold_answer_text(fields: dict[str, Any], gold_field: str, teacher_text: str) -> str | None:
    """A row's gold text written as the teacher's answer starts (its leading space), or None
    when the row has none."""
    gold = fields.get(gold_field)
    if not isinstance(gold, str) or not gold.strip():
        return None
    return teacher_text[: len(teacher_text) - len(teacher_text.lstrip())] + gold.strip()
