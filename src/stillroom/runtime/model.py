"""A loaded causal LM and the forward passes the runtime runs on it.

Every pass keeps the output layer (Gemma: 262k x 640) off the positions that need none:
sampling reads the last position only, scoring only the positions that predict a candidate.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

import torch

from stillroom.runtime.loading import eos_ids, pad_id

# The output layer runs on at most this many rows at once, so (N, V) logits never exist whole.
HEAD_ROWS = 64


class LocalModel:
    """A Hugging Face causal LM in eval mode, its device, and its end and padding ids."""

    def __init__(self, lm: Any, tokenizer: Any) -> None:
        self.lm = lm.eval()
        self.device: torch.device = next(lm.parameters()).device
        self.eos_token_ids = eos_ids(lm, tokenizer)
        self.pad_token_id = pad_id(tokenizer, self.eos_token_ids)
        self.max_positions: int | None = getattr(lm.config, "max_position_embeddings", None)
        # transformers 5 renamed the forward's `past_key_values` to `cache`.
        params = inspect.signature(lm.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._softcap: float | None = getattr(lm.config, "final_logit_softcapping", None)
        self.lock = threading.Lock()  # one batch at a time: it uses every core

    @property
    def vocab_size(self) -> int:
        return int(self.lm.config.vocab_size)

    def new_cache(self) -> Any:
        """An empty KV cache for this model."""
        from transformers import DynamicCache

        return DynamicCache(config=self.lm.config)

    def logits(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """Float32 logits at the last position only: (B, T) in, (B, V) out."""
        out = self.lm(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kw: cache},
        )
        return out.logits[:, -1].float()

    def hidden(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """Final hidden states without the output layer: (B, T) in, (B, T, H) out."""
        out = self.lm.base_model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_kw: cache},
        )
        return out.last_hidden_state

    def log_probs(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary log-probs of tokens `ids` after each hidden state.

        (N, H) and (N, C) in, (N, C) out. The output layer runs 64 rows at a time, so the
        (N, V) logits never exist whole.
        """
        out = [hidden.new_zeros((0, ids.shape[1]), dtype=torch.float32)]
        for i in range(0, hidden.shape[0], HEAD_ROWS):
            logits = self.head(hidden[i : i + HEAD_ROWS])  # (n, V)
            norm = logits.logsumexp(dim=-1, keepdim=True)  # (n, 1)
            out.append(logits.gather(1, ids[i : i + HEAD_ROWS]) - norm)
        return torch.cat(out)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer for the rows given: (N, H) in, (N, V) float32 logits out."""
        logits = self.lm.get_output_embeddings()(hidden).float()
        if self._softcap:  # Gemma 2 style final-logit softcapping, as the model's forward
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits
