"""The watermark inside vLLM: a batch-level logits processor for vLLM's v1 engine.

Loaded when vLLM starts (this module is imported only there, in vLLM's own environment):

    STILLROOM_WATERMARK_KEYS=key.json[:other.json] python -m vllm.entrypoints.openai.api_server \
        --logits-processors stillroom.watermark.vllm_plugin:WatermarkLogitsProcessor \
        --logprobs-mode processed_logprobs ...

Keys are stillroom key files (`stillroom watermark keygen`); the processor adds the same
keyed green-list bias as `serve` (`WatermarkProcessor`: delta on every green id after the
last `context_width` tokens of prompt and answer, end-of-sequence ids never biased), so
`stillroom watermark detect` and `stillroom trace` read vLLM's text as they read ours.

Which key marks a request:
- the request's `vllm_xargs: {"watermark_key_id": "<key_id>"}` (a loaded key; an unknown id
  is refused with status 400), or "none" for no watermark;
- otherwise `STILLROOM_WATERMARK_DEFAULT`: a loaded key id, or "none"; unset, the first
  key file's key marks every request.

Log-probs: with `--logprobs-mode processed_logprobs` vLLM reports them after logits
processors, i.e. the watermarked distribution, which is what `serve` reports (see
`runtime/prompt_logprobs.py` for why a server must report the one it samples from); at
temperature 1 without top-p the two servers then report the same distributions.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import torch
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    LogitsProcessor,
    MoveDirectionality,
)

from stillroom.watermark.key import load_key
from stillroom.watermark.processor import WatermarkProcessor

KEYS_ENV = "STILLROOM_WATERMARK_KEYS"
DEFAULT_ENV = "STILLROOM_WATERMARK_DEFAULT"
REQUEST_ARG = "watermark_key_id"
NONE = "none"


@cache
def _keys() -> dict[str, Any]:
    """key_id -> WatermarkKey, from the key files in STILLROOM_WATERMARK_KEYS, in order."""
    paths = [p for p in os.environ.get(KEYS_ENV, "").split(os.pathsep) if p]
    keys = [load_key(p) for p in paths]
    return {k.key_id: k for k in keys}


def _default_id() -> str:
    keys = _keys()
    chosen = os.environ.get(DEFAULT_ENV) or next(iter(keys), NONE)
    if chosen != NONE and chosen not in keys:
        raise ValueError(f"{DEFAULT_ENV}={chosen!r} names no key in {KEYS_ENV}")
    return chosen


def _requested_id(params: Any) -> str:
    extra = getattr(params, "extra_args", None) or {}
    return str(extra.get(REQUEST_ARG) or _default_id())


class WatermarkLogitsProcessor(LogitsProcessor):
    """Adds delta to the green logits of each watermarked request's row."""

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        key_id = _requested_id(sampling_params)
        if key_id != NONE and key_id not in _keys():
            raise ValueError(
                f"vllm_xargs.{REQUEST_ARG}: no watermark key {key_id!r} is loaded here; "
                f"use one of {sorted(_keys())} or {NONE!r}"
            )

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        unbiased = _eos_ids(vllm_config)
        self.processors = {
            key_id: WatermarkProcessor(key, unbiased=unbiased) for key_id, key in _keys().items()
        }
        # batch row -> (its processor, its prompt ids, its output ids: vLLM's running list)
        self.rows: dict[int, tuple[WatermarkProcessor, list[int], list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # the bias can move the top token: greedy answers are marked too

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, prompt, output in batch_update.added:
            key_id = _requested_id(params)
            if key_id == NONE:
                self.rows.pop(index, None)
            else:
                self.rows[index] = (self.processors[key_id], list(prompt or []), output)
        for a, b, direction in batch_update.moved:
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if row_a is not None:
                self.rows[b] = row_a
            if direction == MoveDirectionality.SWAP and row_b is not None:
                self.rows[a] = row_b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        groups: dict[int, list[int]] = {}
        for index, (processor, _, _) in self.rows.items():
            groups.setdefault(id(processor), []).append(index)
        for indices in groups.values():
            processor = self.rows[indices[0]][0]
            width = processor.context_width
            contexts = [_context(*self.rows[i][1:], width) for i in indices]
            processor.apply_inplace(logits, indices, contexts)  # only these rows change
        return logits


def _context(prompt: list[int], output: list[int], width: int) -> list[int]:
    """The last `width` tokens of prompt and answer so far."""
    if len(output) >= width:
        return list(output[-width:])
    return prompt[max(0, len(prompt) - (width - len(output))) :] + list(output)


def _eos_ids(vllm_config: Any) -> set[int]:
    """End-of-sequence ids from the model's config and generation config."""
    ids: set[int] = set()
    model_config = getattr(vllm_config, "model_config", None)
    for source in (getattr(model_config, "hf_config", None), _generation_config(model_config)):
        value = getattr(source, "eos_token_id", None)
        ids.update([value] if isinstance(value, int) else list(value or []))
    return ids


def _generation_config(model_config: Any) -> Any:
    try:
        from transformers import GenerationConfig

        return GenerationConfig.from_pretrained(model_config.model)
    except (OSError, ValueError, AttributeError):
        return None
