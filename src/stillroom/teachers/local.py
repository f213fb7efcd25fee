"""A white-box teacher: a Hugging Face causal LM run in this process (stillroom.runtime).

Unlike an API, a local model shows its whole next-token distribution, so at every generated
position we keep its top-k log-probs (from the raw logits at temperature 1, before any
temperature or top-p warping: the teacher's belief, not the sampler's).

With a watermark key, delta is added to each step's green logits (stillroom.watermark; never
to the EOS ids) before anything else, so the reported log-probs and top-k describe the
watermarked distribution: the one the token was actually drawn from. Reporting the unbiased
ones instead would hand anyone who reads them the green list (the tokens whose log-prob jumps
by delta). For the same reason prompt log-probs (`prompt_logprobs`, a server's `echo`) are the
watermarked ones. Scoring candidates (`score*`) is not watermarked: it returns one total per
label, never a distribution to compare.

Each request samples from its own seeded generator, derived from the request, so the same
request gives the same sample in any batch.

torch is imported here and in the runtime only, so the CLI starts without it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from stillroom.errors import InputError, TeacherFatalError
from stillroom.runtime.decoding import Decoding, Row, decode
from stillroom.runtime.loading import load_lm
from stillroom.runtime.model import LocalModel
from stillroom.runtime.prompt_logprobs import TextLogprobs, text_logprobs
from stillroom.runtime.scoring import PrefixKV, score_ids
from stillroom.teachers.base import (
    Choice,
    Completion,
    GenerationParams,
    TeacherKind,
    TeacherRequest,
    Usage,
)
from stillroom.teachers.batching import QueuedTeacher
from stillroom.watermark.key import WatermarkKey
from stillroom.watermark.processor import WatermarkProcessor

# Scoring holds at most about this many (row, token) KV-cache entries at once
# (~300 MB for Gemma 3 270M); longer prompts get smaller chunks.
_SCORE_ROW_TOKENS = 8192


class LocalTeacher(QueuedTeacher):
    """A Hugging Face causal LM as a teacher: generation with top-k signals, and scoring.

    `generate` and `score*` are synchronous and batch on their own; `complete` gathers
    concurrent async callers into those batches (micro-batching).
    """

    kind: TeacherKind = "local"

    def __init__(
        self,
        lm: Any,
        tokenizer: Any,
        *,
        name: str,
        batch_size: int = 16,
        gather_s: float = 0.002,
        watermark: WatermarkKey | None = None,
    ) -> None:
        self.runtime = LocalModel(lm, tokenizer)
        super().__init__(
            tokenizer,
            name=name,
            batch_size=batch_size,
            gather_s=gather_s,
            eos_token_ids=self.runtime.eos_token_ids,
            max_positions=self.runtime.max_positions,
        )
        self.lm = self.runtime.lm
        self.device = self.runtime.device
        self.pad_token_id = self.runtime.pad_token_id
        self._prefix: PrefixKV | None = None  # score_batch's shared KV
        # Set: every generated token is drawn from the watermarked distribution.
        self.watermark = watermark
        self._watermark = (  # never biases the end of a sequence: lengths stay key-free
            WatermarkProcessor(watermark, unbiased=self.eos_token_ids)
            if watermark is not None
            else None
        )

    @classmethod
    def load(
        cls,
        path_or_name: str,
        *,
        dtype: str = "float32",
        batch_size: int = 16,
        device: str = "cpu",
        watermark: WatermarkKey | None = None,
    ) -> LocalTeacher:
        """Load a model folder (or "gemma-3-270m" / "default" for the built-in teacher).

        With `watermark`, generated text carries that key's green-list watermark.
        """
        lm, tokenizer, name = load_lm(path_or_name, dtype=dtype)
        return cls(lm.to(device), tokenizer, name=name, batch_size=batch_size, watermark=watermark)

    # ---- generation -------------------------------------------------------------------

    def generate(
        self, requests: list[TeacherRequest], *, logprobs: bool = True
    ) -> list[Completion]:
        """Answer requests in batches of up to batch_size sequences; results keep order.

        Requests with equal params share batches; prompts of similar length go together to
        waste less padding. Each choice's `token_ids` end with the EOS token when the model
        stopped by itself; a stop string is cut from `text`, and the tokens are cut to the
        fewest that still cover `text`. With `logprobs=False` the choices carry no log-probs
        (token_logprobs, top_ids and top_logprobs are None): cheaper, for callers that read
        only the text.
        """
        encoded = [self._encode(r) for r in requests]
        groups: dict[GenerationParams, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            groups[request.params.batch_key()].append(i)
        results: dict[int, Completion] = {}
        for params, indices in groups.items():
            indices.sort(key=lambda i: len(encoded[i]))
            per_batch = max(1, self.batch_size // params.n)
            for start in range(0, len(indices), per_batch):
                chunk = indices[start : start + per_batch]
                done = self._generate_batch(
                    [requests[i] for i in chunk], [encoded[i] for i in chunk], params, logprobs
                )
                results.update(zip(chunk, done, strict=True))
        return [results[i] for i in range(len(requests))]

    def _generate_batch(
        self,
        requests: list[TeacherRequest],
        prompts: list[list[int]],
        params: GenerationParams,
        logprobs: bool = True,
    ) -> list[Completion]:
        start = time.perf_counter()
        seeds = [self._row_seed(r, j) for r in requests for j in range(params.n)]
        how = Decoding(params, self.eos_token_ids, self._decode_text, self._watermark, logprobs)
        with self.runtime.lock, torch.inference_mode():
            rows = decode(self.runtime, prompts, seeds, how)
        choices = [
            self._to_choice(row, j % params.n, params, logprobs) for j, row in enumerate(rows)
        ]
        elapsed = time.perf_counter() - start
        completions = []
        for i, prompt in enumerate(prompts):
            mine = choices[i * params.n : (i + 1) * params.n]
            used = sum(len(c.token_ids or []) for c in mine)
            completions.append(
                Completion(
                    choices=mine,
                    usage=Usage(prompt_tokens=len(prompt), completion_tokens=used),
                    model=self.model,
                    latency_s=elapsed,
                    compute_s=elapsed / len(prompts),
                    prompt_token_ids=list(prompt),
                )
            )
        return completions

    def _to_choice(
        self, row: Row, index: int, params: GenerationParams, logprobs: bool = True
    ) -> Choice:
        ids = row.ids
        text = self._decode_text(ids)
        cuts = [i for s in params.stop if (i := text.find(s)) >= 0]
        if row.hit_stop_string and cuts:  # (a tail decode can differ from the whole's)
            cut = min(cuts)
            text = text[:cut]
            n = len(ids)  # the fewest tokens whose text still covers text[:cut]
            while n > 0 and len(self._decode_text(ids[: n - 1])) >= cut:
                n -= 1
            ids = ids[:n]
        t, k = len(ids), min(params.top_logprobs, self.runtime.vocab_size) if logprobs else 0
        top_ids = top_lp = None
        if k:
            top_ids = np.stack(row.top_ids[:t]) if t else np.zeros((0, k), np.int64)  # (T, k)
            top_lp = np.stack(row.top_logprobs[:t]) if t else np.zeros((0, k), np.float32)
        return Choice(
            index=index,
            text=text,
            finish_reason=row.finish,
            token_ids=list(ids),
            token_logprobs=row.logprobs[:t] if logprobs else None,
            top_ids=top_ids,
            top_logprobs=top_lp,
        )

    def _row_seed(self, request: TeacherRequest, choice: int) -> int:
        """Per-sequence seed: derived from the request, so a batch's make-up can't change it."""
        if request.params.seed is None:
            return secrets.randbits(63)
        material = f"{request.params.seed}|{request.key(self.model)}|{choice}".encode()
        return int.from_bytes(hashlib.sha256(material).digest()[:8], "big") >> 1

    # ---- scoring ----------------------------------------------------------------------

    def answer(self, requests: list[TeacherRequest]) -> list[Completion]:
        """Generate, or score the candidates of, each request; results keep order."""
        scored = [i for i, r in enumerate(requests) if r.candidates]
        if not scored:
            return self.generate(requests)
        results: dict[int, Completion] = {}
        others = [i for i in range(len(requests)) if not requests[i].candidates]
        if others:
            results.update(zip(others, self.generate([requests[i] for i in others]), strict=True))
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i in scored:
            groups[requests[i].candidates].append(i)
        for candidates, indices in groups.items():
            batch = [requests[i] for i in indices]
            results.update(zip(indices, self._classify(batch, list(candidates)), strict=True))
        return [results[i] for i in range(len(requests))]

    def _classify(self, requests: list[TeacherRequest], candidates: list[str]) -> list[Completion]:
        prompts = []
        for r in requests:
            if r.prompt is None:
                raise TeacherFatalError(
                    "classification scores plain prompts; give prompts.field or "
                    "prompts.template without prompts.system",
                    status=400,
                )
            prompts.append(r.prompt)
        start = time.perf_counter()
        encoded = [self._encode_text(p, special=True) for p in prompts]
        scores = self._score_encoded(encoded, candidates)
        elapsed = time.perf_counter() - start
        out = []
        for ids, row in zip(encoded, scores, strict=True):
            best = max(range(len(candidates)), key=row.__getitem__)
            choice = Choice(0, candidates[best], "scored", label_logprobs=list(row))
            out.append(
                Completion(
                    [choice],
                    Usage(prompt_tokens=len(ids), completion_tokens=0),
                    model=self.model,
                    latency_s=elapsed,
                    compute_s=elapsed / len(prompts),
                    prompt_token_ids=ids,
                )
            )
        return out

    def score(self, prompt: str, candidates: list[str]) -> list[float]:
        """Total log-prob of each candidate continuation of `prompt` (full-vocab normalized).

        Each candidate is tokenized on its own and appended to the prompt's tokens, so put
        the separating space in the candidate (" positive"), as the model would write it.
        """
        return self.score_batch([prompt], candidates)[0]

    def score_batch(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        """`score` for many prompts with the same candidates: (prompts, candidates) log-probs.

        The prompts' common token prefix (a few-shot header) runs once and its KV cache is
        kept for later calls; the output layer (Gemma: 262k x 640) runs only where a
        candidate token is predicted, never over the prompt.
        """
        return self._score_encoded(
            [self._encode_text(p, special=True) for p in prompts], candidates
        )

    def _score_encoded(self, encoded: list[list[int]], candidates: list[str]) -> list[list[float]]:
        if not candidates:
            raise InputError("score needs at least one candidate; give the labels to compare")
        targets = [self._encode_candidate(c) for c in candidates]
        scores, self._prefix = score_ids(
            self.runtime,
            encoded,
            targets,
            batch_size=self.batch_size,
            row_tokens=_SCORE_ROW_TOKENS,
            prefix=self._prefix,
        )
        return scores

    @property
    def vocab_size(self) -> int:
        """Rows of the model's output layer: token ids run below it."""
        return int(self.runtime.vocab_size)

    def prompt_logprobs(self, prompts: list[str], k: int) -> list[TextLogprobs]:
        """Each prompt's tokens (as a completion would read it, <bos> first), the log-prob of
        each given the ones before, and the top-k there: what `echo` with `logprobs`
        returns. With a watermark key the distributions are the watermarked ones, as for
        generated tokens (see the module docstring)."""
        return self.sequence_logprobs([self._encode(TeacherRequest(p, None)) for p in prompts], k)

    def sequence_logprobs(self, sequences: list[list[int]], k: int) -> list[TextLogprobs]:
        """`prompt_logprobs` of token id sequences, as given."""
        with self.runtime.lock:
            return text_logprobs(
                self.runtime, sequences, k, processor=self._watermark, batch_size=self.batch_size
            )

    def _encode_candidate(self, candidate: str) -> list[int]:
        ids = self._encode_text(candidate, special=False)
        if not ids:
            raise InputError(f"candidate {candidate!r} has no tokens; give non-empty labels")
        return ids
