"""The student section of a config, kept free of torch so configs validate fast; it sits below
both `stillroom.config` and `stillroom.train`.

See `stillroom.train.students` for what each init does.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_KEYS = (
    *("architecture", "layers", "hidden_size", "heads", "kv_heads", "intermediate_size"),
    *("head_dim", "tokenizer"),
)
ONLY_FOR: dict[str, tuple[str, ...]] = {
    **{k: ("config",) for k in CONFIG_KEYS},
    "intermediate_size": ("config", "shrink"),  # shrink: keep the strongest MLP neurons
    "path": ("pretrained", "shrink"),  # shrink: an open model to cut down (API teachers)
    "keep_every": ("shrink",),
    "keep_layers": ("shrink",),
    "trim_vocab": ("shrink", "config"),
    "vocab_top_k": ("shrink", "config"),
    "freeze_embeddings": ("shrink", "pretrained"),
}


class LoraConfig(BaseModel):
    """LoRA adapters through peft; only the adapters train."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1
    )


class StudentConfig(BaseModel):
    """How to initialise the student; see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    init: Literal["config", "pretrained", "shrink"] = "shrink"
    # init: config
    architecture: str | None = None  # a transformers model_type; default: the teacher's
    layers: int | None = Field(None, ge=1)
    hidden_size: int | None = Field(None, ge=1)
    heads: int | None = Field(None, ge=1)
    kv_heads: int | None = Field(None, ge=1)  # default: heads
    # config: default 4 * hidden_size; shrink: default the teacher's, else its top neurons
    intermediate_size: int | None = Field(None, ge=1)
    head_dim: int | None = Field(None, ge=1)  # default: hidden_size / heads
    tokenizer: Literal["teacher"] | str = "teacher"  # or a folder with its own tokenizer
    seed: int = 0  # random init (config) and LoRA adapters
    # init: pretrained; or, for shrink, the model to cut down instead of the local teacher
    # (an API teacher's weights are not ours: a distiller starts from an open model)
    path: Path | None = None
    # init: shrink
    keep_every: int = Field(2, ge=1)
    keep_layers: list[int] | None = Field(None, min_length=1)
    # shrink, and config with the teacher's tokenizer
    trim_vocab: bool = True
    # How many of the teacher's top-k candidates at each answer token join the trimmed
    # vocabulary (default: all the harvest kept). Rare alternatives make up most of it: on
    # the derived-word task, top 20 gives 30.7k tokens and top 3 16.5k. Candidates left
    # out count in the loss's rest-of-vocabulary bucket, so the teacher's mass is kept.
    vocab_top_k: int | None = Field(None, ge=0)
    # shrink, pretrained: keep the (tied) token embeddings as the teacher learned them. A
    # small harvest teaches a few thousand answer tokens; left free, the embeddings (most of
    # a trimmed student's weights) memorise them instead of the layers learning the task.
    freeze_embeddings: bool = False
    lora: LoraConfig | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @model_validator(mode="after")
    def _consistent(self) -> StudentConfig:
        problems = [
            f"{key} does not apply to init: {self.init} (only to init: {' or '.join(inits)})"
            for key, inits in ONLY_FOR.items()
            if self._changed(key) and self.init not in inits
        ]
        if self.init == "config":
            problems += self._config_problems()
        elif self.init == "pretrained" and self.path is None:
            problems.append("init: pretrained needs path, a Hugging Face model folder")
        elif self.init == "shrink":
            problems += self._shrink_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _changed(self, key: str) -> bool:
        """Set to something other than its default (a dumped config repeats defaults)."""
        default = type(self).model_fields[key].get_default(call_default_factory=True)
        return key in self.model_fields_set and getattr(self, key) != default

    def _config_problems(self) -> list[str]:
        missing = [k for k in ("layers", "hidden_size", "heads") if getattr(self, k) is None]
        if missing:
            return [f"init: config needs {', '.join(missing)}"]
        assert self.hidden_size is not None and self.heads is not None  # for mypy
        problems = []
        if self.tokenizer != "teacher" and self._changed("trim_vocab"):
            problems.append("trim_vocab applies only with tokenizer: teacher")
        if self.head_dim is None and self.hidden_size % self.heads:
            problems.append(
                f"hidden_size {self.hidden_size} is not divisible by heads {self.heads}; "
                "change one, or set head_dim"
            )
        if self.kv_heads is not None and self.heads % self.kv_heads:
            problems.append(f"heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")
        return problems

    def _shrink_problems(self) -> list[str]:
        if self.keep_layers is None:
            return []
        problems = []
        if self._changed("keep_every"):
            problems.append("set keep_every or keep_layers, not both")
        layers = self.keep_layers
        if any(i < 0 for i in layers) or any(b <= a for a, b in itertools.pairwise(layers)):
            problems.append(
                f"keep_layers {layers} must be layer indices in increasing order, e.g. [0, 9, 17]"
            )
        return problems
