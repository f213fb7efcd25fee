"""A white-box teacher: a Hugging Face causal LM run in this process.

Unlike an API, a local model shows its whole next-token distribution, so at every generated
position we keep its top-k log-probs (from the raw logits at temperature 1, before any
temperature or top-p warping: the teacher's belief, not the sampler's). The full
(steps, batch, vocab) logits never pile up: each step is reduced to top-k as it is made.

With a watermark key, delta is added to each step's green logits (stillroom.watermark; never
to the EOS ids) before anything else, so the reported log-probs and top-k describe the
watermarked distribution: the one the token was actually drawn from. Reporting the unbiased
ones instead would hand anyone who reads them the green list (the tokens whose log-prob jumps
by delta). Scoring (`score*`, candidates) is not watermarked: it returns numbers, not text.

Generation is our own loop over the KV cache rather than `model.generate`, so that each
request samples from its own seeded generator (the same request gives the same sample in
any batch), finished rows leave the batch, and stop strings end a row as soon as they appear.

torch is imported here and in gemma.py only, so the CLI starts without it.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stillroom.errors import InputError, TeacherFatalError
from stillroom.teachers.base import (
    Choice,
    Completion,
    GenerationParams,
    TeacherKind,
    TeacherRequest,
    Usage,
)
from stillroom.teachers.batching import QueuedTeacher
from stillroom.teachers.gemma import DEFAULT_TEACHER, DEFAULT_TEACHER_ALIASES, default_teacher_dir
from stillroom.watermark.key import WatermarkKey
from stillroom.watermark.processor import WatermarkProcessor

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A shared prompt prefix shorter than this is not worth caching for score_batch.
_MIN_PREFIX_TOKENS = 8
# Scoring holds at most about this many (row, token) KV-cache entries at once
# (~300 MB for Gemma 3 270M); longer prompts get smaller chunks.
_SCORE_ROW_TOKENS = 8192
# Stop strings are looked for in the decoded tail of this many tokens beyond their length.
_STOP_TAIL_SLACK = 8


@dataclass
class _Row:
    """One sequence being generated, and what the teacher thought at each step."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_ids: list[np.ndarray] = field(default_factory=list)  # each (k,) int64
    top_logprobs: list[np.ndarray] = field(default_factory=list)  # each (k,) float32
    finish: str | None = None
    hit_stop_string: bool = False
    # The prompt's last tokens: the watermark's context until enough tokens are generated.
    prompt_tail: list[int] = field(default_factory=list)

    def context(self, width: int) -> list[int]:
        """The last `width` tokens of prompt + generated (fewer only if both are short)."""
        if len(self.ids) >= width:
            return self.ids[len(self.ids) - width :]
        need = width - len(self.ids)
        return self.prompt_tail[max(0, len(self.prompt_tail) - need) :] + self.ids


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
        super().__init__(
            tokenizer,
            name=name,
            batch_size=batch_size,
            gather_s=gather_s,
            eos_token_ids=_eos_ids(lm, tokenizer),
            max_positions=getattr(lm.config, "max_position_embeddings", None),
        )
        self.lm = lm.eval()
        self.device = next(lm.parameters()).device
        self.pad_token_id = _pad_id(tokenizer, self.eos_token_ids)
        # transformers 5 renamed the forward's `past_key_values` to `cache`.
        params = inspect.signature(lm.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._softcap: float | None = getattr(lm.config, "final_logit_softcapping", None)
        self._model_lock = threading.Lock()  # one batch at a time: it uses every core
        self._prefix: tuple[tuple[int, ...], Any] | None = None  # score_batch's shared KV
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
        if dtype not in _DTYPES:
            raise TeacherFatalError(f"dtype {dtype!r} is not supported; use one of {list(_DTYPES)}")
        source, name = resolve_model(path_or_name)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            lm: Any = AutoModelForCausalLM.from_pretrained(
                source, dtype=_DTYPES[dtype], local_files_only=True
            )
        except (OSError, ValueError) as e:
            raise TeacherFatalError(
                f"could not load teacher {path_or_name!r} from {source}: {e}. Give a folder "
                "saved with save_pretrained (config.json, weights, tokenizer), or "
                f"{DEFAULT_TEACHER!r} for the built-in offline teacher"
            ) from e
        return cls(lm.to(device), tokenizer, name=name, batch_size=batch_size, watermark=watermark)

    # ---- generation -------------------------------------------------------------------

    def generate(self, requests: list[TeacherRequest]) -> list[Completion]:
        """Answer requests in batches of up to batch_size sequences; results keep order.

        Requests with equal params share batches; prompts of similar length go together to
        waste less padding. Each choice's `token_ids` end with the EOS token when the model
        stopped by itself; a stop string is cut from `text`, and the tokens are cut to the
        fewest that still cover `text`.
        """
        encoded = [self._encode(r) for r in requests]
        groups: dict[GenerationParams, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            groups[request.params].append(i)
        results: dict[int, Completion] = {}
        for params, indices in groups.items():
            indices.sort(key=lambda i: len(encoded[i]))
            per_batch = max(1, self.batch_size // params.n)
            for start in range(0, len(indices), per_batch):
                chunk = indices[start : start + per_batch]
                done = self._generate_batch(
                    [requests[i] for i in chunk], [encoded[i] for i in chunk], params
                )
                results.update(zip(chunk, done, strict=True))
        return [results[i] for i in range(len(requests))]

    def _generate_batch(
        self, requests: list[TeacherRequest], prompts: list[list[int]], params: GenerationParams
    ) -> list[Completion]:
        start = time.perf_counter()
        seeds = [self._row_seed(r, j) for r in requests for j in range(params.n)]
        with self._model_lock, torch.inference_mode():
            rows = self._decode(prompts, params, seeds)
        choices = [self._to_choice(row, j % params.n, params) for j, row in enumerate(rows)]
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

    def _decode(
        self, prompts: list[list[int]], params: GenerationParams, seeds: list[int]
    ) -> list[_Row]:
        """The sampling loop: prefill once, then one token per step for the rows still open."""
        from transformers import DynamicCache

        ids, mask = pad_batch(prompts, self.pad_token_id, self.device, left=True)  # (B, L)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L): left padding shifts them
        cache = DynamicCache(config=self.lm.config)
        logits = self._logits(ids, mask, positions, cache)  # (B, V)
        if params.n > 1:  # prefill each prompt once, then fork its cache n ways
            cache.batch_repeat_interleave(params.n)
            logits = logits.repeat_interleave(params.n, dim=0)
            mask = mask.repeat_interleave(params.n, dim=0)
            positions = positions.repeat_interleave(params.n, dim=0)
        limit = self._max_new_tokens(params, ids.shape[1])
        width = self._watermark.context_width if self._watermark is not None else 0
        # Row j samples prompt j // n; only a watermark reads the prompt's tail.
        rows = [
            _Row(prompt_tail=prompts[j // params.n][-width:] if width else [])
            for j in range(len(seeds))
        ]
        active = list(range(len(rows)))  # rows still generating, in cache order
        generators = [self._generator(seed) for seed in seeds] if params.temperature else []
        positions = positions[:, -1:]  # (R, 1)
        while True:
            next_ids = self._step(logits, [rows[r] for r in active], params, generators, limit)
            keep = [i for i, r in enumerate(active) if rows[r].finish is None]
            if not keep:
                return rows
            if len(keep) < len(active):  # drop finished rows from the batch and its cache
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, positions, next_ids = mask[index], positions[index], next_ids[index]
                active = [active[i] for i in keep]
                generators = [generators[i] for i in keep] if generators else []
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)  # (A, L + t)
            positions = positions + 1
            logits = self._logits(next_ids[:, None], mask, positions, cache)  # (A, V)

    def _step(
        self,
        logits: torch.Tensor,
        rows: list[_Row],
        params: GenerationParams,
        generators: list[torch.Generator],
        limit: int,
    ) -> torch.Tensor:
        """Pick each open row's next token and record the teacher's distribution there."""
        if self._watermark is not None:  # first: what is recorded is what is sampled from
            width = self._watermark.context_width
            logits = self._watermark(logits, [row.context(width) for row in rows])  # (A, V)
        # Log-probs of the raw (or watermarked) logits at temperature 1, only where needed.
        norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # (A, 1)
        next_ids = _pick(logits, params, generators)  # (A,)
        chosen = (logits.gather(1, next_ids[:, None]) - norm)[:, 0].cpu().numpy()  # (A,)
        k = min(params.top_logprobs, logits.shape[-1])
        if k:
            top_logits, top_ids = logits.topk(k, dim=-1)  # (A, k), sorted descending
            top_lp = top_logits - norm
            top_lp_np = top_lp.cpu().numpy().astype(np.float32)
            top_ids_np = top_ids.cpu().numpy().astype(np.int64)
        for i, (row, token) in enumerate(zip(rows, next_ids.tolist(), strict=True)):
            row.ids.append(token)
            row.logprobs.append(float(chosen[i]))
            if k:
                row.top_ids.append(top_ids_np[i])
                row.top_logprobs.append(top_lp_np[i])
            if token in self.eos_token_ids:
                row.finish = "stop"
            elif params.stop and self._ends_in_stop(row.ids, params.stop):
                row.finish, row.hit_stop_string = "stop", True
            elif len(row.ids) >= limit:
                row.finish = "length"
        return next_ids

    def _to_choice(self, row: _Row, index: int, params: GenerationParams) -> Choice:
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
        t, k = len(ids), min(params.top_logprobs, self.lm.config.vocab_size)
        top_ids = top_lp = None
        if k:
            top_ids = np.stack(row.top_ids[:t]) if t else np.zeros((0, k), np.int64)  # (T, k)
            top_lp = np.stack(row.top_logprobs[:t]) if t else np.zeros((0, k), np.float32)
        return Choice(
            index=index,
            text=text,
            finish_reason=row.finish,
            token_ids=list(ids),
            token_logprobs=row.logprobs[:t],
            top_ids=top_ids,
            top_logprobs=top_lp,
        )

    def _ends_in_stop(self, ids: list[int], stop: tuple[str, ...]) -> bool:
        tail = self._decode_text(ids[-(max(map(len, stop)) + _STOP_TAIL_SLACK) :])
        return any(s in tail for s in stop)

    def _max_new_tokens(self, params: GenerationParams, prompt_len: int) -> int:
        room = (self.max_positions or 1 << 30) - prompt_len
        wanted = room if params.max_tokens is None else params.max_tokens
        return max(1, min(wanted, room))

    def _row_seed(self, request: TeacherRequest, choice: int) -> int:
        """Per-sequence seed: derived from the request, so a batch's make-up can't change it."""
        if request.params.seed is None:
            return secrets.randbits(63)
        material = f"{request.params.seed}|{request.key(self.model)}|{choice}".encode()
        return int.from_bytes(hashlib.sha256(material).digest()[:8], "big") >> 1

    def _generator(self, seed: int) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        return generator

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
                    "prompts.template without prompts.system"
                )
            prompts.append(r.prompt)
        start = time.perf_counter()
        scores = self.score_batch(prompts, candidates)
        elapsed = time.perf_counter() - start
        out = []
        for prompt, row in zip(prompts, scores, strict=True):
            best = max(range(len(candidates)), key=row.__getitem__)
            ids = self._encode_text(prompt, special=True)
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
        if not candidates:
            raise InputError("score needs at least one candidate; give the labels to compare")
        targets = [self._encode_candidate(c) for c in candidates]
        encoded = [self._encode_text(p, special=True) for p in prompts]
        out: list[list[float]] = []
        start = 0
        while start < len(encoded):
            # Fewer prompts per chunk when they are long, to bound the KV cache held.
            width = max(map(len, encoded[start : start + self.batch_size]))
            size = min(self.batch_size, max(1, _SCORE_ROW_TOKENS // width))
            with self._model_lock, torch.inference_mode():
                out.extend(self._score_chunk(encoded[start : start + size], targets).tolist())
            start += size
        return out

    def _score_chunk(self, prompts: list[list[int]], targets: list[list[int]]) -> torch.Tensor:
        """(P, C) total log-probs: one pass over the prompts, then one over the candidates."""
        n_prefix, cache = self._prefix_cache(prompts)
        p = len(prompts)
        # Prompt suffixes after the shared prefix, right-padded: (P, S).
        ids, suffix_mask = pad_batch(
            [t[n_prefix:] for t in prompts], self.pad_token_id, self.device
        )
        mask = torch.cat([suffix_mask.new_ones(p, n_prefix), suffix_mask], dim=1)  # (P, Lp+S)
        positions = n_prefix + torch.arange(ids.shape[1], device=self.device).expand(p, -1)
        hidden = self._hidden(ids, mask, positions, cache)  # (P, S, H)
        last = suffix_mask.sum(1) - 1  # (P,) each prompt's last real position
        firsts = torch.tensor([t[0] for t in targets], device=self.device).expand(p, -1)
        scores = self._log_probs(hidden[torch.arange(p), last], firsts)  # (P, C)
        # Candidates of 2+ tokens continue from each prompt's cache, a few at a time: every
        # candidate row holds its own copy of the prompt's KV.
        multi = [j for j, t in enumerate(targets) if len(t) > 1]
        width = mask.shape[1] + max(map(len, targets))
        per_group = max(1, _SCORE_ROW_TOKENS // (p * width))
        for g in range(0, len(multi), per_group):
            group = multi[g : g + per_group]
            reuse = g + per_group >= len(multi)  # the last group may consume the cache
            sub = cache if reuse else copy.deepcopy(cache)
            rest = self._continuations(sub, mask, n_prefix + last + 1, [targets[j] for j in group])
            scores[:, group] += rest
        return scores

    def _continuations(
        self, cache: Any, mask: torch.Tensor, start: torch.Tensor, targets: list[list[int]]
    ) -> torch.Tensor:
        """Log-prob of each target's tokens after its first, given the prompts in `cache`.

        cache and mask (P, L) hold the prompts; start (P,) is each one's next position.
        Rows are prompt-major (row p*G + g). Returns (P, G).
        """
        p, g = mask.shape[0], len(targets)
        inputs, input_mask = pad_batch([t[:-1] for t in targets], self.pad_token_id, self.device)
        nexts, _ = pad_batch([t[1:] for t in targets], self.pad_token_id, self.device)  # (G, M)
        cache.batch_repeat_interleave(g)
        mask = torch.cat([mask.repeat_interleave(g, 0), input_mask.repeat(p, 1)], dim=1)
        steps = torch.arange(inputs.shape[1], device=self.device)  # (M,)
        positions = start.repeat_interleave(g)[:, None] + steps  # (P*G, M)
        hidden = self._hidden(inputs.repeat(p, 1), mask, positions, cache)  # (P*G, M, H)
        where = input_mask.repeat(p, 1).bool()  # (P*G, M): positions that predict a token
        picked = self._log_probs(hidden[where], nexts.repeat(p, 1)[where][:, None])[:, 0]
        total = torch.zeros(p * g, device=self.device)
        return total.index_add_(0, where.nonzero()[:, 0], picked).view(p, g)

    def _prefix_cache(self, prompts: list[list[int]]) -> tuple[int, Any]:
        """A fresh KV cache for the chunk, holding the prompts' shared prefix if any."""
        from transformers import DynamicCache

        limit = min(map(len, prompts)) - 1  # every prompt keeps >= 1 token for its suffix
        hit = self._prefix
        if hit is None or not all(tuple(t[: len(hit[0])]) == hit[0] for t in prompts):
            hit = None
        if hit is None or len(hit[0]) > limit:
            n = _common_prefix_len(prompts, limit) if len(prompts) > 1 else 0
            if n < _MIN_PREFIX_TOKENS:
                return 0, DynamicCache(config=self.lm.config)
            cache = DynamicCache(config=self.lm.config)
            ids = torch.tensor([prompts[0][:n]], device=self.device)  # (1, Lp)
            positions = torch.arange(n, device=self.device)[None]
            self._hidden(ids, torch.ones_like(ids), positions, cache)
            hit = self._prefix = (tuple(prompts[0][:n]), cache)
        cache = copy.deepcopy(hit[1])
        cache.batch_repeat_interleave(len(prompts))
        return len(hit[0]), cache

    # ---- model calls ------------------------------------------------------------------

    def _logits(
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

    def _hidden(
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

    def _log_probs(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary log-probs of tokens `ids` after each hidden state.

        (N, H) and (N, C) in, (N, C) out. The output layer runs 64 rows at a time, so the
        (N, V) logits never exist whole.
        """
        out = [hidden.new_zeros((0, ids.shape[1]), dtype=torch.float32)]
        for i in range(0, hidden.shape[0], 64):
            logits = self._head(hidden[i : i + 64])  # (n, V)
            norm = logits.logsumexp(dim=-1, keepdim=True)  # (n, 1)
            out.append(logits.gather(1, ids[i : i + 64]) - norm)
        return torch.cat(out)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer for the rows given: (N, H) in, (N, V) float32 logits out."""
        logits = self.lm.get_output_embeddings()(hidden).float()
        if self._softcap:  # Gemma 2 style final-logit softcapping, as the model's forward
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    # ---- tokenization -----------------------------------------------------------------

    def _encode_candidate(self, candidate: str) -> list[int]:
        ids = self._encode_text(candidate, special=False)
        if not ids:
            raise InputError(f"candidate {candidate!r} has no tokens; give non-empty labels")
        return ids


def resolve_model(path_or_name: str) -> tuple[str | Path, str]:
    """(what to pass to from_pretrained, the model name requests are keyed by)."""
    if path_or_name in DEFAULT_TEACHER_ALIASES:
        return default_teacher_dir(), DEFAULT_TEACHER
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TeacherFatalError(
                f"{path} has no config.json, so it is not a Hugging Face model folder; give "
                f"a folder saved with save_pretrained, or {DEFAULT_TEACHER!r}"
            )
        return path, path_or_name
    hub_id = path_or_name.count("/") == 1 and not path_or_name.startswith((".", "/", "~"))
    if hub_id:  # a hub name: usable only if already in the local Hugging Face cache
        return path_or_name, path_or_name
    raise TeacherFatalError(
        f"no model folder at {path.resolve()}; give the path of a Hugging Face model folder, "
        f"or {DEFAULT_TEACHER!r} for the built-in offline teacher"
    )


def _eos_ids(lm: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends a sequence: the generation config's (Gemma: <eos>, <end_of_turn>)
    and the tokenizer's."""
    found: set[int] = set()
    for source in (getattr(lm, "generation_config", None), lm.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(int(v) for v in value)
    return frozenset(found)


def _pad_id(tokenizer: Any, eos_ids: frozenset[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return min(eos_ids) if eos_ids else 0  # masked out anyway; any valid id does


def pad_batch(
    seqs: list[list[int]], pad_id: int, device: torch.device, *, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists to (B, L) ids and a (B, L) 0/1 mask; an empty list is all padding."""
    width = max(1, max(map(len, seqs)))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        if seq:
            span = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[i, span] = torch.tensor(seq, dtype=torch.long)
            mask[i, span] = 1
    return ids.to(device), mask.to(device)


def _pick(
    logits: torch.Tensor, params: GenerationParams, generators: list[torch.Generator]
) -> torch.Tensor:
    """Next token per row: greedy when temperature is None or 0, else sampled. (A, V) -> (A,)

    Sampling inverts the CDF with one uniform draw per row from that row's generator:
    exact, and far cheaper than torch.multinomial over a 262k vocabulary.
    """
    if not params.temperature:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / params.temperature, dim=-1)  # (A, V)
    ids = None
    if params.top_p is not None and params.top_p < 1.0:
        probs, ids = _nucleus(probs, params.top_p)  # (A, K) each
    cdf = probs.cumsum(dim=-1)  # (A, K or V)
    u = torch.cat([torch.rand(1, generator=g, device=probs.device) for g in generators])
    target = (u * cdf[:, -1])[:, None]  # (A, 1), strictly below each row's total
    picks = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
    return (picks if ids is None else ids.gather(1, picks))[:, 0]


def _nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest set of most likely tokens whose mass reaches top_p.

    (A, V) probs -> (A, K) probs (zero outside the nucleus) and their (A, K) token ids.
    Sorting a 262k vocabulary costs ~12 ms a row; the nucleus usually lies in the top 1024,
    so only rows whose top 1024 fall short of top_p (flat distributions) get a full sort.
    """
    vocab = probs.shape[-1]
    top, ids = probs.topk(min(1024, vocab), dim=-1)  # (A, K) sorted descending
    short = (top.sum(dim=-1) < top_p).nonzero()[:, 0]
    if len(short):
        top = torch.nn.functional.pad(top, (0, vocab - top.shape[-1]))  # (A, V), zero mass
        ids = torch.nn.functional.pad(ids, (0, vocab - ids.shape[-1]))
        top[short], ids[short] = probs[short].sort(dim=-1, descending=True)
    before = top.cumsum(dim=-1) - top  # mass ranked above each token; 0 for the first
    return top.masked_fill(before >= top_p, 0.0), ids


def _common_prefix_len(seqs: list[list[int]], limit: int) -> int:
    n = 0
    first = seqs[0]
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n
