"""The fake server's model: a random bigram language model over pseudo-words, fixed by a seed."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import random

import numpy as np

MAX_TOP_LOGPROBS = 20  # the most alternatives a reply carries per token, as OpenAI's API


def _pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: dict[str, None] = {}  # insertion-ordered set: the vocabulary is fixed by the seed
    while len(words) < count:
        n_syll = int(rng.integers(1, 4))
        words["".join(syllables[int(i)] for i in rng.integers(0, len(syllables), n_syll))] = None
    return list(words)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class TinyLM:
    """A random bigram language model: P(next | prev) = softmax(W[prev]), W fixed by a seed.

    Tokens are pseudo-words with a leading space, so a text's word count is its token count.
    Reported log-probs are the model's own (temperature 1), as vLLM reports them, whatever
    temperature sampled the token.
    """

    def __init__(self, vocab_size: int = 400, seed: int = 0) -> None:
        if vocab_size < MAX_TOP_LOGPROBS:
            raise ValueError(f"vocab_size must be >= {MAX_TOP_LOGPROBS}, got {vocab_size}")
        rng = np.random.default_rng(seed)
        self.tokens = [" " + w for w in _pseudo_words(rng, vocab_size)]
        self.vocab_size = vocab_size
        # Scale 3 peaks each row on a few successors, so top-k carries signal as in a real LM.
        self._logits = rng.normal(0.0, 3.0, size=(vocab_size, vocab_size))  # (V, V)
        logprobs = _log_softmax(self._logits)
        # The per-token loop runs on Python lists: indexing numpy scalars is ~10x slower.
        self._logprobs: list[list[float]] = logprobs.tolist()
        self._top_ids = np.argsort(-logprobs, axis=1)[:, :MAX_TOP_LOGPROBS].tolist()  # (V, 20)
        self._argmax = [row[0] for row in self._top_ids]
        self._cdfs: dict[float, list[list[float]]] = {}
        # Replies are assembled from cached JSON fragments: json.dumps spends ~0.5 us per float,
        # which made a 64-token top-5 reply cost ~0.7 ms of server CPU.
        self._tok_json = [json.dumps(t) for t in self.tokens]
        self._bytes_json = [json.dumps(list(t.encode())) for t in self.tokens]
        self._lp_json: dict[int, str] = {}
        self._top_json: dict[tuple[int, int, bool], str] = {}

    def logprob(self, prev: int, token: int) -> float:
        return self._logprobs[prev][token]

    def _lp(self, prev: int, token: int) -> str:
        key = prev * self.vocab_size + token
        text = self._lp_json.get(key)
        if text is None:
            text = self._lp_json[key] = json.dumps(self._logprobs[prev][token])
        return text

    def _alts(self, prev: int, k: int, chat: bool) -> str:
        """JSON of the top-k alternatives after `prev`: chat entries, or a completions dict."""
        text = self._top_json.get((prev, k, chat))
        if text is None:
            tj, row = self._tok_json, self._top_ids[prev][:k]
            if chat:
                bj = self._bytes_json
                items = [
                    f'{{"token":{tj[j]},"logprob":{self._lp(prev, j)},"bytes":{bj[j]}}}'
                    for j in row
                ]
                text = "[" + ",".join(items) + "]"
            else:
                text = "{" + ",".join(f"{tj[j]}:{self._lp(prev, j)}" for j in row) + "}"
            self._top_json[(prev, k, chat)] = text
        return text

    def chat_logprobs_json(self, start: int, ids: list[int], k: int) -> str:
        """choices[i].logprobs of a chat reply: {"content": [{token, logprob, bytes, top...}]}."""
        tj, bj, parts, prev = self._tok_json, self._bytes_json, [], start
        for i in ids:
            lp, top = self._lp(prev, i), self._alts(prev, k, True)
            parts.append(f'{{"token":{tj[i]},"logprob":{lp},"bytes":{bj[i]},"top_logprobs":{top}}}')
            prev = i
        return '{"content":[' + ",".join(parts) + '],"refusal":null}'

    def completion_logprobs_json(self, start: int, ids: list[int], k: int) -> str:
        """choices[i].logprobs of a completions reply; text_offset counts from the completion."""
        prevs = [start, *ids][: len(ids)]
        offsets = list(itertools.accumulate((len(self.tokens[i]) for i in ids[:-1]), initial=0))
        return (
            f'{{"tokens":[{",".join(self._tok_json[i] for i in ids)}],'
            f'"token_logprobs":[{",".join(map(self._lp, prevs, ids))}],'
            f'"top_logprobs":[{",".join(self._alts(p, k, False) for p in prevs)}],'
            f'"text_offset":{json.dumps(offsets[: len(ids)])}}}'
        )

    def start_token(self, prompt: str) -> int:
        """The prompt conditions generation only through this first 'previous' token."""
        return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") % self.vocab_size

    def sample(self, start: int, length: int, temperature: float, rng: random.Random) -> list[int]:
        """`length` token ids after `start`; temperature 0 is greedy."""
        ids: list[int] = []
        prev = start
        if temperature <= 0.0:
            for _ in range(length):
                prev = self._argmax[prev]
                ids.append(prev)
            return ids
        cdfs = self._cdf_table(temperature)
        last = self.vocab_size - 1
        for _ in range(length):
            row = cdfs[prev]
            prev = min(bisect.bisect_right(row, rng.random() * row[-1]), last)
            ids.append(prev)
        return ids

    def _cdf_table(self, temperature: float) -> list[list[float]]:
        key = round(temperature, 4)
        table = self._cdfs.get(key)
        if table is None:
            if len(self._cdfs) >= 16:  # a handful of temperatures per test run; bound memory
                self._cdfs.clear()
            probs = np.exp(_log_softmax(self._logits / key))
            table = self._cdfs[key] = np.cumsum(probs, axis=1).tolist()
        return table
