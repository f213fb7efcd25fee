"""Run configs: YAML validated by pydantic, dotted overrides, every problem reported at once.

A harvest config names where prompts come from, which teacher answers them, how it samples,
and where the run lives. The resolved config is written next to the results.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stillroom.errors import ConfigError
from stillroom.student_config import StudentConfig
from stillroom.teacher_config import (
    DEFAULT_KIND,
    TEACHER_KINDS,
    ApiTeacherConfig,
    LocalTeacherConfig,
    TeacherConfig,
    kinds_with_key,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptSource(_Strict):
    path: Path
    format: Literal["auto", "jsonl", "csv", "parquet", "hf"] = "auto"
    # The prompt is `field` of each row, or `template` filled with the row's fields.
    field: str | None = None
    template: str | None = None
    # Chat rows: a list of {"role", "content"} under this field.
    messages_field: str | None = None
    system: str | None = None
    id_field: str | None = None
    # Row fields copied into the store beside each record (gold labels, metadata).
    keep_fields: list[str] = Field(default_factory=list)
    # A transfer set: more rows of the same form (same format, field/template, id_field)
    # that the teacher answers for training only. They join the train split whatever
    # `split` says, need no gold (a kept field a row lacks is stored empty), and are never
    # validated or scored: the prompts a distiller has without references.
    transfer_path: Path | None = None

    @model_validator(mode="after")
    def _one_prompt_form(self) -> PromptSource:
        given = [k for k in ("field", "template", "messages_field") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of prompts.field, prompts.template or prompts.messages_field"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class GenerationConfig(_Strict):
    max_tokens: int | None = Field(256, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=128)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    top_logprobs: int = Field(0, ge=0, le=1000)


SplitName = Literal["train", "validation", "test"]

# Split column values understood without `split.names` (compared stripped, case-insensitive).
SPLIT_ALIASES: dict[str, SplitName] = {
    **dict.fromkeys(("train", "training"), "train"),
    **dict.fromkeys(("validation", "valid", "val", "dev"), "validation"),
    **dict.fromkeys(("test", "testing"), "test"),
}


class SplitConfig(_Strict):
    train: float = Field(0.8, ge=0, le=1)
    validation: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int = 0
    # A prompt-file column whose values decide each item's split (a data set's own split)
    # instead of the seeded hash; `names` maps other values, e.g. {heldout: test}.
    field: str | None = None
    names: dict[str, SplitName] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        hashed = sorted({"train", "validation", "test", "seed"} & self.model_fields_set)
        if self.field is not None and hashed:
            raise ValueError(
                f"split.{', split.'.join(hashed)} shape the seeded hash split, which "
                "split.field replaces; remove them or remove split.field"
            )
        if self.field is None and self.names:
            raise ValueError("split.names applies only with split.field (the column it maps)")
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split.train + split.validation + split.test must be 1 (got {total})")
        return self

    def split_for(self, value: object) -> SplitName | None:
        """The split a `field` value names (None: unknown); `names` first, then the aliases."""
        text = str(value).strip()
        if text in self.names:
            return self.names[text]
        return SPLIT_ALIASES.get(text.lower())


class CostConfig(_Strict):
    # USD per 1M tokens; when unset, the built-in price table for teacher.model is used.
    input_per_1m: float | None = Field(None, ge=0)
    output_per_1m: float | None = Field(None, ge=0)
    budget_usd: float | None = Field(None, ge=0)


class TaskConfig(_Strict):
    """What the teacher does per prompt: generate a completion, or score label verbalizers."""

    kind: Literal["generate", "classify"] = "generate"
    labels: list[str] = Field(default_factory=list)  # verbalizers, e.g. [animal, food]
    label_prefix: str = " "  # written before a label, as the model would ("Category: food")
    # The row field holding the gold label (classify) or gold text (generate), if any; for
    # generate, list it in prompts.keep_fields so the harvest stores it.
    gold_field: str | None = None
    # How the student reads an item: a template over the row's fields, so the student sees
    # no few-shot prefix. Unset: "{text}" for classification; the teacher's own prompt for
    # generation (e.g. "{text}\nWord:" lets a small student read only the item).
    student_template: str | None = None

    @model_validator(mode="after")
    def _labels_for_classify(self) -> TaskConfig:
        if self.kind == "classify" and len(set(self.labels)) < 2:
            raise ValueError("task.kind classify needs task.labels: two or more distinct labels")
        if self.kind == "generate" and self.labels:
            raise ValueError("task.labels applies only to task.kind: classify")
        return self

    @property
    def candidates(self) -> tuple[str, ...]:
        return tuple(self.label_prefix + label for label in self.labels)

    @property
    def student_input(self) -> str | None:
        """The template the student reads; None: the teacher's prompt (generation only)."""
        if self.student_template is None and self.kind == "classify":
            return "{text}"
        return self.student_template

    def student_fields(self) -> list[str]:
        template = self.student_input or ""
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]


class OnPolicyConfig(_Strict):
    """On-policy distillation (GKD, Agarwal et al. 2024): the student writes, the teacher
    scores the student's own tokens, the student moves towards the teacher there."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # GKD's lambda: the share of batches the student writes itself; the rest train on the
    # teacher's stored answers (top-k KD when the harvest kept top-k, else sequence KD).
    lmbda: float = Field(1.0, ge=0, le=1, alias="lambda")
    temperature: float = Field(1.0, gt=0, le=2)  # the student's sampling temperature
    max_new_tokens: int | None = Field(None, ge=1)  # default: generation.max_tokens
    top_k: int = Field(20, ge=1, le=1000)  # teacher alternatives scored per token


class TrainSection(_Strict):
    """How `stillroom train` builds and trains the student from the harvest."""

    # sequence: CE on the teacher's tokens; logits: divergence to the stored top-k;
    # labels: soft-label KD on the teacher's label log-probs (task.kind: classify);
    # on_policy: divergence to the teacher's top-k on the student's own samples (see
    # OnPolicyConfig), scored through the teacher as training runs.
    objective: Literal["sequence", "logits", "labels", "on_policy"] = "logits"
    on_policy: OnPolicyConfig = Field(default_factory=OnPolicyConfig)
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    beta: float = Field(0.5, ge=0, le=1)  # generalized JSD's mixing weight
    temperature: float = Field(1.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)  # weight of the KD term against hard-token CE
    # teacher: learn the teacher's answers. gold: learn task.gold_field's text instead
    # (objective: sequence), the no-teacher baseline `distill` trains beside a generator.
    targets: Literal["teacher", "gold"] = "teacher"
    student: StudentConfig = Field(default_factory=StudentConfig)
    max_steps: int = Field(200, ge=1)
    epochs: int | None = Field(None, ge=1)
    batch_tokens: int = Field(4096, ge=16)  # padded tokens per micro-batch
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_len: int = Field(512, ge=2)
    checkpoint_every: int = Field(50, ge=0)  # 0: no checkpoints
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(50, ge=0)
    eval_batches: int | None = Field(None, ge=1)
    early_stopping_patience: int | None = Field(3, ge=1)
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    # bf16: mixed precision, matmuls in bfloat16 under autocast while weights and optimizer
    # state stay float32; ~1.7x faster on CPUs with AVX512-BF16 or AMX, and on recent GPUs.
    precision: Literal["fp32", "bf16"] = "fp32"


class EvalConfig(_Strict):
    # The precision students are served in when eval times them; set it to the teacher's
    # dtype so both are timed as a deployment would run them.
    student_dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class HarvestConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    runs_dir: Path = Path("runs")
    prompts: PromptSource
    teacher: TeacherConfig = Field(default_factory=LocalTeacherConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    samples_per_prompt: int = Field(1, ge=1, le=1024)
    split: SplitConfig = Field(default_factory=SplitConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _teacher_kind_default(cls, raw: Any) -> Any:
        """`kind` picks the teacher's model, so a section without it gets the default kind."""
        if isinstance(raw, dict) and isinstance(raw.get("teacher"), dict):
            raw = {**raw, "teacher": {"kind": DEFAULT_KIND, **raw["teacher"]}}
        return raw

    @model_validator(mode="after")
    def _task_and_objective(self) -> HarvestConfig:
        classify = self.task.kind == "classify"
        if classify and self.train.objective == "on_policy":
            raise ValueError("train.objective: on_policy needs task.kind: generate")
        if (
            self.train.objective == "on_policy"
            and isinstance(self.teacher, ApiTeacherConfig)
            and self.teacher.folder is None
            and self.train.student.init == "pretrained"
        ):
            # The API scores the student's tokens by id; a saved student's ids (a trimmed
            # vocabulary) mean the served model's only through the served model's tokenizer.
            raise ValueError(
                "train.objective: on_policy with an API teacher and student.init: pretrained "
                "needs teacher.folder: a local copy of the served model (config.json and "
                "tokenizer), so the student's token ids map to the served model's"
            )
        if classify != (self.train.objective == "labels"):
            raise ValueError(
                "train.objective: labels goes with task.kind: classify (and only with it)"
            )
        if self.train.targets == "gold" and (
            classify or not self.task.gold_field or self.train.objective != "sequence"
        ):
            raise ValueError(
                "train.targets: gold trains a generator on task.gold_field's text; it needs "
                "task.kind: generate, task.gold_field and train.objective: sequence "
                "(a classifier's gold-only baseline is objective: labels with alpha: 0)"
            )
        if classify or self.task.student_template is not None:
            # the store must keep what the student reads, and the gold label
            wanted = [*self.task.student_fields(), *filter(None, [self.task.gold_field])]
            for name in wanted:
                if name not in self.prompts.keep_fields:
                    self.prompts.keep_fields.append(name)
        return self

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name


def load_config(path: str | Path, overrides: list[str] | None = None) -> HarvestConfig:
    """Read a YAML config, apply `key.sub=value` overrides, validate. The prompt path resolves
    against the config file's folder; `runs_dir` against the working directory."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(str(path), [f"cannot read the config: {e.strerror}"]) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(where, [f"not valid YAML: {getattr(e, 'problem', e)}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), ["the top level must be a mapping of keys"])
    for item in overrides or []:
        _apply_override(raw, item, str(path))
    cfg = validate_config(raw, str(path), _key_lines(text))
    base = path.parent
    cfg.prompts.path = _resolve(cfg.prompts.path, base)
    if cfg.prompts.transfer_path is not None:
        cfg.prompts.transfer_path = _resolve(cfg.prompts.transfer_path, base)
    return cfg


def validate_config(
    raw: dict[str, Any], source: str, lines: dict[str, int] | None = None
) -> HarvestConfig:
    try:
        return HarvestConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(source, _describe(e, source, lines or {})) from None


def dump_config(cfg: HarvestConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _resolve(p: Path, base: Path) -> Path:
    return p if p.is_absolute() else (base / p)


def _describe(err: ValidationError, source: str, lines: dict[str, int]) -> list[str]:
    problems = []
    for item in err.errors():
        loc, msg = _untag(item["loc"]), item["msg"]
        key = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "union_tag_invalid" and loc == ("teacher",):
            key = "teacher.kind"
            tag = (item.get("ctx") or {}).get("tag")
            msg = f"unknown teacher kind {tag!r}; use one of: {', '.join(TEACHER_KINDS)}"
        elif item["type"] == "extra_forbidden" and (wrong := _wrong_kind(item["loc"])):
            kind, owners = wrong
            msg = (
                f"does not apply to teacher.kind: {kind} "
                f"(only to teacher.kind: {' or '.join(owners)})"
            )
        elif item["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against examples/ or the README)"
        elif item["type"] == "missing":
            msg = "required key is missing"
        line = lines.get(key)
        where = f" (line {line})" if line else ""
        problems.append(f"{key}{where}: {msg}")
    return problems


def _untag(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """pydantic puts the chosen kind in an error's location (teacher.api.concurrency); the
    YAML has no such level, so drop it to name the key as written."""
    if len(loc) > 1 and loc[0] == "teacher" and loc[1] in TEACHER_KINDS:
        return loc[:1] + loc[2:]
    return loc


def _wrong_kind(loc: tuple[int | str, ...]) -> tuple[str, list[str]] | None:
    """(the given kind, the kinds that have the key) when a teacher key belongs to another
    kind, else None."""
    if len(loc) != 3 or loc[0] != "teacher" or loc[1] not in TEACHER_KINDS:
        return None
    owners = kinds_with_key(str(loc[2]))
    return (str(loc[1]), owners) if owners else None


def _key_lines(text: str) -> dict[str, int]:
    """Map each dotted key of a YAML mapping to its line number, for error messages."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}

    def walk(n: Any, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = f"{prefix}{k.value}"
                out[key] = k.start_mark.line + 1
                walk(v, key + ".")

    walk(node, "")
    return out


def _apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(source, [f"override {item!r}: write it as key.sub=value"])
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(source, [f"override {item!r}: {part} is not a mapping"])
        node = nxt
    node[parts[-1]] = yaml.safe_load(value)
