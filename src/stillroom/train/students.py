"""Student initialisation for `stillroom train`: from a config, a pretrained folder, or by
shrinking the teacher.

    init: config      a fresh model of the given shape (random weights, `seed`), with the
                      teacher's tokenizer (trimmed, see below) or its own (`tokenizer: PATH`)
    init: pretrained  any Hugging Face causal-LM folder (`path`)
    init: shrink      the teacher itself, keeping some of its layers (DistilBERT's recipe)
                      and, with `trim_vocab`, only the tokens the harvest and the task use

Layer choice for shrink: `keep_every: n` keeps ceil(L / n) of the teacher's L layers (at
least two), evenly spaced from the first to the last, both always kept; n = 2 on a 12-layer
teacher gives DistilBERT's own [0, 2, 4, 7, 9, 11]. The first layer reads the embeddings
and the last writes to the output head, the two places a student can least afford to
re-learn. `keep_layers: [...]` picks the layers explicitly instead.

Vocabulary: a student whose token ids differ from the teacher's carries `to_teacher`, an
int64 array mapping each student id to its teacher id (-1 for a token of its own tokenizer
the teacher lacks), so harvested top-k ids can be mapped into the student's vocabulary. It
is None when the student's vocabulary is the teacher's exactly. Trimming is in `vocab.py`.

LoRA (`lora:`) wraps the model with peft; saving merges the adapters into the weights, so
a saved student is always a plain Hugging Face folder, plus `stillroom_student.json`.

torch and transformers are imported only here: the train command alone imports this module.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from stillroom.errors import ConfigError, StoreError
from stillroom.student_config import LoraConfig, StudentConfig
from stillroom.train.vocab import (
    TrimmedVocab,
    VocabTrimError,
    map_by_token_string,
    remap_token_ids,
    student_tokenizer,
    trim_vocab,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

STUDENT_FILE = "stillroom_student.json"
SOURCE = "student config"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Config keys holding one entry per layer, sliced along with the layers.
PER_LAYER_KEYS = ("layer_types", "no_rope_layers")
# State-dict keys of decoder blocks: "model.layers.7.mlp.up_proj.weight".
LAYER_KEY = re.compile(r"^(.*?\blayers)\.(\d+)\.(.+)$")
# What each init builds: model, tokenizer, to_teacher, details for the report.
Built = tuple[Any, PreTrainedTokenizerFast, np.ndarray | None, dict[str, Any]]


@dataclass
class Student:
    """A student model, its tokenizer, and how its vocabulary maps onto the teacher's."""

    model: Any  # a PreTrainedModel, or a peft PeftModel around one when LoRA is on
    tokenizer: PreTrainedTokenizerFast
    to_teacher: np.ndarray | None  # (vocab_student,) int64 teacher ids; None: same vocab
    params_teacher: int
    params_student: int  # as saved: LoRA adapters merged, tied weights counted once
    vocab_teacher: int
    vocab_student: int
    details: dict[str, Any] = field(default_factory=dict)  # init, kept_layers, lora, dtype

    @property
    def params_trainable(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def teacher_to_student(self) -> np.ndarray:
        """(vocab_teacher,) int64: each teacher id's student id, -1 where the student has none."""
        if self.to_teacher is None:
            return np.arange(self.vocab_teacher, dtype=np.int64)
        out = np.full(self.vocab_teacher, -1, dtype=np.int64)
        ok = self.to_teacher >= 0
        out[self.to_teacher[ok]] = np.nonzero(ok)[0]
        return out

    def describe(self) -> dict[str, Any]:
        """The student's part of the training report: shape, sizes before and after."""
        config = _base_model(self.model).config
        return {
            "init": self.details.get("init"),
            "architecture": config.model_type,
            "layers": config.num_hidden_layers,
            "kept_layers": self.details.get("kept_layers"),
            "hidden_size": config.hidden_size,
            "params_teacher": self.params_teacher,
            "params_student": self.params_student,
            "params_ratio": round(self.params_student / max(self.params_teacher, 1), 4),
            "params_trainable": self.params_trainable,
            "vocab_teacher": self.vocab_teacher,
            "vocab_student": self.vocab_student,
            "vocab_shared": self.to_teacher is None,
            "lora": self.details.get("lora"),
            "dtype": self.details.get("dtype"),
        }


# --- building ------------------------------------------------------------------------------


def build_student(
    cfg: StudentConfig, teacher_dir: Path, keep_token_ids: Iterable[int] | None = None
) -> Student:
    """Initialise a student as `cfg` says.

    `keep_token_ids` are the teacher ids the harvest (prompts, completions, top-k) and the
    task (label verbalizers) use; a trimmed vocabulary keeps them and what they need. They
    are required whenever the vocabulary is trimmed (`trim_vocab` with the teacher's
    tokenizer) and ignored otherwise.
    """
    teacher_dir = Path(teacher_dir)
    if not (teacher_dir / "config.json").is_file():
        raise ConfigError(SOURCE, [f"teacher folder {teacher_dir} has no config.json"])
    teacher_config = AutoConfig.from_pretrained(teacher_dir)
    keep = None if keep_token_ids is None else sorted({int(i) for i in keep_token_ids})
    build = {"shrink": _shrink, "config": _from_config, "pretrained": _from_pretrained}[cfg.init]
    model, tokenizer, to_teacher, details = build(cfg, teacher_dir, teacher_config, keep)
    model.to(DTYPES[cfg.dtype])
    details |= {"init": cfg.init, "dtype": cfg.dtype}
    params_student = model.num_parameters()
    if cfg.lora is not None:
        model = _add_lora(model, cfg.lora, cfg.seed)
        details["lora"] = cfg.lora.model_dump()
    return Student(
        model=model,
        tokenizer=tokenizer,
        to_teacher=to_teacher,
        params_teacher=_count_params(teacher_config),
        params_student=params_student,
        vocab_teacher=teacher_config.vocab_size,
        vocab_student=_base_model(model).config.vocab_size,
        details=details,
    )


def kept_layers(
    num_layers: int, keep_every: int = 2, keep_layers: list[int] | None = None
) -> list[int]:
    """Teacher layer indices a shrunk student keeps (see the module docstring)."""
    if keep_layers is not None:
        bad = [i for i in keep_layers if not 0 <= i < num_layers]
        if bad:
            raise ConfigError(
                SOURCE,
                [
                    f"student.keep_layers: {bad} out of range; the teacher has {num_layers} "
                    f"layers, numbered 0..{num_layers - 1}"
                ],
            )
        return list(keep_layers)
    count = min(num_layers, max(2, math.ceil(num_layers / keep_every)))
    return _spread(num_layers, count)


def _spread(n: int, k: int) -> list[int]:
    """k indices into range(n), evenly spaced from 0 to n - 1 (rounded half up)."""
    if k <= 1 or n <= 1:
        return [0] * k
    return [(2 * j * (n - 1) + (k - 1)) // (2 * (k - 1)) for j in range(k)]


def _shrink(
    cfg: StudentConfig, teacher_dir: Path, teacher_config: PretrainedConfig, keep: list[int] | None
) -> Built:
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    layers = kept_layers(teacher.config.num_hidden_layers, cfg.keep_every, cfg.keep_layers)
    teacher_tok = _load_tokenizer(teacher_dir, "teacher")
    trimmed = _trim(cfg, teacher_dir, keep)
    rows = None if trimmed is None else torch.from_numpy(trimmed.to_teacher)
    config = _shrunk_config(teacher.config, layers, trimmed)
    state = _shrunk_state_dict(teacher, layers, rows)
    del teacher
    if cfg.intermediate_size is not None:
        state = _narrow_mlp(state, cfg.intermediate_size)
        config.intermediate_size = cfg.intermediate_size
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            SOURCE,
            [
                f"student.init: shrink cannot map this teacher's weights (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}); use init: config or init: pretrained"
            ],
        )
    model.tie_weights()
    _carry_generation_config(model, teacher_dir, trimmed)
    tokenizer = teacher_tok if trimmed is None else student_tokenizer(trimmed, teacher_tok)
    to_teacher = None if trimmed is None else trimmed.to_teacher
    return model, tokenizer, to_teacher, {"kept_layers": layers}


def _shrunk_config(
    config: PretrainedConfig, layers: list[int], trimmed: TrimmedVocab | None
) -> PretrainedConfig:
    """The teacher's config with only `layers` (and their per-layer entries) and the vocab."""
    d = config.to_dict()
    d["num_hidden_layers"] = len(layers)
    for key in PER_LAYER_KEYS:
        if isinstance(d.get(key), list):
            d[key] = [d[key][i] for i in layers]
    if trimmed is not None:
        d["vocab_size"] = len(trimmed.to_teacher)
        d.update(remap_token_ids(d, trimmed.teacher_to_student()))
    return type(config).from_dict(d)


def _carry_generation_config(
    model: PreTrainedModel, teacher_dir: Path, trimmed: TrimmedVocab | None
) -> None:
    """Give the student the teacher's generation defaults (Gemma stops at <end_of_turn> too)."""
    from transformers import GenerationConfig

    if not (teacher_dir / "generation_config.json").is_file():
        return
    d = GenerationConfig.from_pretrained(teacher_dir).to_dict()
    if trimmed is not None:
        d.update(remap_token_ids(d, trimmed.teacher_to_student()))
    model.generation_config = GenerationConfig.from_dict(d)


def _shrunk_state_dict(
    teacher: PreTrainedModel, layers: list[int], rows: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The teacher's weights renamed to the student's layer numbers; vocab rows sliced."""
    new_index = {old: new for new, old in enumerate(layers)}
    vocab_params = {id(m.weight) for m in _vocab_modules(teacher)}
    vocab_params |= {
        id(m.bias) for m in _vocab_modules(teacher) if getattr(m, "bias", None) is not None
    }
    named = dict(teacher.named_parameters(remove_duplicate=False))
    out: dict[str, torch.Tensor] = {}
    seen_layer = False
    for key, value in teacher.state_dict().items():
        match = LAYER_KEY.match(key)
        if match:
            seen_layer = True
            if int(match[2]) not in new_index:
                continue  # a dropped layer
            key = f"{match[1]}.{new_index[int(match[2])]}.{match[3]}"
        elif rows is not None and key in named and id(named[key]) in vocab_params:
            value = value[rows]  # (V_student, H): the kept tokens' rows
        out[key] = value
    if not seen_layer:
        raise ConfigError(
            SOURCE,
            [
                "student.init: shrink needs a decoder whose blocks live in a `layers` list; "
                "use init: config or init: pretrained"
            ],
        )
    return out


MLP_KEY = re.compile(r"(.*\.layers\.\d+\.mlp)\.(gate_proj|up_proj|down_proj)\.weight$")


def _narrow_mlp(state: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """Keep each layer's `width` strongest MLP neurons (structured width pruning).

    A neuron j of a gated MLP is row j of gate_proj and up_proj and column j of down_proj;
    its strength is the product of those three norms, a weight-only proxy for how much it
    can move the residual stream. Training then recovers what the dropped neurons carried.
    """
    blocks: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if m := MLP_KEY.match(key):
            blocks.setdefault(m[1], {})[m[2]] = value
    if not blocks or any(len(b) != 3 for b in blocks.values()):
        raise ConfigError(SOURCE, [
            "student.intermediate_size: shrink can narrow only gated MLPs (gate_proj, up_proj, "
            "down_proj); leave intermediate_size unset for this teacher"])  # fmt: skip
    out = dict(state)
    for prefix, b in blocks.items():
        full = b["gate_proj"].shape[0]
        if width > full:
            raise ConfigError(SOURCE, [
                f"student.intermediate_size: {width} is wider than the teacher's {full}; give "
                f"at most {full}"])  # fmt: skip
        strength = (
            b["gate_proj"].norm(dim=1) * b["up_proj"].norm(dim=1) * b["down_proj"].norm(dim=0)
        )
        keep = strength.topk(width).indices.sort().values
        out[f"{prefix}.gate_proj.weight"] = b["gate_proj"][keep].clone()
        out[f"{prefix}.up_proj.weight"] = b["up_proj"][keep].clone()
        out[f"{prefix}.down_proj.weight"] = b["down_proj"][:, keep].clone()
    return out


def _vocab_modules(model: PreTrainedModel) -> list[Any]:
    out = [model.get_input_embeddings()]
    head = model.get_output_embeddings()
    return out + ([head] if head is not None else [])


def _trim(cfg: StudentConfig, teacher_dir: Path, keep: list[int] | None) -> TrimmedVocab | None:
    """The trimmed teacher vocabulary, or None when the student keeps it whole."""
    if not cfg.trim_vocab:
        return None
    if keep is None:
        raise ValueError(
            "build_student: trim_vocab needs keep_token_ids (the teacher ids the harvest and "
            "the task use); pass them, or set trim_vocab: false"
        )
    tokenizer_file = teacher_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ConfigError(
            SOURCE,
            [f"student.trim_vocab: {teacher_dir} has no tokenizer.json; set trim_vocab: false"],
        )
    try:
        trimmed = trim_vocab(tokenizer_file, keep)
    except VocabTrimError as e:
        raise ConfigError(SOURCE, [f"student.trim_vocab: {e}"]) from None
    return trimmed


def _from_config(
    cfg: StudentConfig, teacher_dir: Path, teacher_config: PretrainedConfig, keep: list[int] | None
) -> Built:
    teacher_tok = _load_tokenizer(teacher_dir, "teacher")
    if cfg.tokenizer == "teacher":
        trimmed = _trim(cfg, teacher_dir, keep)
        tokenizer = teacher_tok if trimmed is None else student_tokenizer(trimmed, teacher_tok)
        to_teacher = None if trimmed is None else trimmed.to_teacher
    else:
        tokenizer = _load_tokenizer(Path(cfg.tokenizer), "student.tokenizer")
        to_teacher = map_by_token_string(
            tokenizer, len(tokenizer), teacher_tok, teacher_config.vocab_size
        )
    config = _shape_config(cfg, teacher_config, tokenizer)
    try:
        with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's RNG alone
            torch.manual_seed(cfg.seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(SOURCE, [f"student: cannot build this shape: {e}"]) from None
    if cfg.tokenizer == "teacher":
        _carry_generation_config(model, teacher_dir, trimmed)
    return model, tokenizer, to_teacher, {}


def _shape_config(
    cfg: StudentConfig, teacher_config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase
) -> PretrainedConfig:
    """A config of the requested shape; the teacher's other settings when the family matches."""
    assert cfg.layers and cfg.hidden_size and cfg.heads  # checked by StudentConfig
    head_dim = cfg.head_dim or cfg.hidden_size // cfg.heads
    shape = {
        "vocab_size": len(tokenizer),
        "num_hidden_layers": cfg.layers,
        "hidden_size": cfg.hidden_size,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads or cfg.heads,
        "intermediate_size": cfg.intermediate_size or 4 * cfg.hidden_size,
        "head_dim": head_dim,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    architecture = cfg.architecture or teacher_config.model_type
    if architecture != teacher_config.model_type:
        try:
            return AutoConfig.for_model(architecture, **shape)
        except ValueError:
            raise ConfigError(
                SOURCE,
                [
                    f"student.architecture: unknown model type {architecture!r}; "
                    "use gemma3_text, llama or another transformers model_type"
                ],
            ) from None
    d = teacher_config.to_dict() | shape
    teacher_types = d.get("layer_types")
    if isinstance(teacher_types, list):
        # Sample the teacher's attention pattern at evenly spaced depths: the last layer of
        # a Gemma-style student stays global (full attention), as the teacher's does.
        d["layer_types"] = [teacher_types[i] for i in _spread(len(teacher_types), cfg.layers)]
    if "query_pre_attn_scalar" in d:  # Gemma scales queries by head_dim ** -0.5
        d["query_pre_attn_scalar"] = head_dim
    return type(teacher_config).from_dict(d)


def _from_pretrained(
    cfg: StudentConfig, teacher_dir: Path, teacher_config: PretrainedConfig, keep: list[int] | None
) -> Built:
    path = Path(cfg.path or "")
    if not (path / "config.json").is_file():
        raise ConfigError(
            SOURCE,
            [
                f"student.path: {path} has no config.json; point it at a Hugging Face model "
                "folder (what save_pretrained writes)"
            ],
        )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    teacher_tok = _load_tokenizer(teacher_dir, "teacher")
    has_tokenizer = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    # A folder without a tokenizer speaks the teacher's.
    tokenizer = _load_tokenizer(path, "student.path") if has_tokenizer else teacher_tok
    rows, teacher_rows = model.config.vocab_size, teacher_config.vocab_size
    return model, tokenizer, map_by_token_string(tokenizer, rows, teacher_tok, teacher_rows), {}


def _load_tokenizer(path: Path, key: str) -> PreTrainedTokenizerFast:
    """A fast (tokenizers-backed) tokenizer from a folder; `key` names the config key."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConfigError(SOURCE, [f"{key}: cannot load a tokenizer from {path} ({e})"]) from None
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ConfigError(
            SOURCE, [f"{key}: {path} has no fast tokenizer; add a tokenizer.json to the folder"]
        )
    return tokenizer


def _count_params(config: PretrainedConfig) -> int:
    """Parameters of a model of this config (tied weights once), built on the meta device."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return int(model.num_parameters())


def _add_lora(model: PreTrainedModel, lora: LoraConfig, seed: int) -> Any:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_peft_model(model, peft_config)
    except ValueError as e:
        raise ConfigError(SOURCE, [f"student.lora.target_modules: {e}"]) from None


def _base_model(model: Any) -> PreTrainedModel:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


# --- saving and loading --------------------------------------------------------------------


def save_student(student: Student, out_dir: Path) -> None:
    """Write the student as a plain Hugging Face folder plus `stillroom_student.json`.

    LoRA adapters are merged into a copy of the weights. The folder appears whole or not at
    all: it is written under a temporary name beside `out_dir`, then renamed into place.
    """
    out_dir = Path(out_dir)
    model = student.model
    if callable(getattr(model, "merge_and_unload", None)):
        model = copy.deepcopy(model).merge_and_unload()  # keep the live adapters training
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(work)
        student.tokenizer.save_pretrained(work)
        meta = {
            "format": 1,
            "to_teacher": None if student.to_teacher is None else student.to_teacher.tolist(),
            "student": student.describe(),
        }
        (work / STUDENT_FILE).write_text(json.dumps(meta) + "\n", encoding="utf-8")
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _replace_dir(new: Path, target: Path) -> None:
    """Rename `new` to `target`, moving an old `target` aside first and removing it after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_student(directory: Path, dtype: str | None = None) -> Student:
    """Load a folder written by `save_student` (LoRA students come back merged), in `dtype`
    ("bfloat16", ...) if given, else as saved."""
    directory = Path(directory)
    meta_file = directory / STUDENT_FILE
    if not meta_file.is_file():
        raise StoreError(
            f"{directory} is not a stillroom student (no {STUDENT_FILE}); to start from a plain "
            "Hugging Face folder, use student.init: pretrained"
        )
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    kwargs = {} if dtype is None else {"dtype": getattr(torch, dtype)}
    model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    tokenizer = _load_tokenizer(directory, str(directory))
    info = meta["student"]
    to_teacher = meta.get("to_teacher")
    return Student(
        model=model,
        tokenizer=tokenizer,
        to_teacher=None if to_teacher is None else np.asarray(to_teacher, dtype=np.int64),
        params_teacher=int(info["params_teacher"]),
        params_student=int(model.num_parameters()),
        vocab_teacher=int(info["vocab_teacher"]),
        vocab_student=int(model.config.vocab_size),
        details={k: info.get(k) for k in ("init", "kept_layers", "lora", "dtype")},
    )
