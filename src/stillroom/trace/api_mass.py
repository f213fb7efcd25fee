"""Radioactivity through an API's log-probs (grey box): the green-mass test with no weights.

Many suspects are reachable only through an OpenAI-compatible API, and many such APIs (vLLM,
`stillroom serve`, others) return each token's top-k log-probs. Two ways to read them:

- texts (`completions` with `echo` and `logprobs`, vLLM's prompt log-probs): the suspect is
  shown our unwatermarked texts and returns its top-k at every position: the open-weights
  mass test of `stillroom.trace.mass`, truncated to the k the API returns;
- answers (`chat` with `logprobs` and `top_logprobs`): the suspect answers our prompts and
  returns its top-k at each token it wrote; the contexts are its own.

Why the p-value holds. Which k tokens an API returns, and what the suspect writes, depend on
the suspect only, never on our key; for a suspect that never saw our watermarked text every
green bit is still an independent Bernoulli(gamma) draw, so the tail of
`stillroom.trace.tail` is exact for the weights the API gave, whatever k is. Truncation
costs power (mass beyond the top k is not seen), never validity. The teacher, run here,
reads the same positions as a baseline (its top k), as in the open-weights test.

Tokens. With vLLM's `return_tokens_as_token_ids` (asked for, and dropped if the API refuses
it) tokens come as "token_id:N", exact when the suspect shares the teacher's tokenizer, as a
distilled model usually does. Otherwise token strings are mapped to the teacher's ids by
their decoded text; strings several ids decode to are dropped (unknown), and a position
whose context is unknown is skipped. Either way the mapping never sees the key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stillroom.errors import InputError
from stillroom.trace.mass import (
    MassLook,
    MassResult,
    Weights,
    read_distributions,
    refuse_marked_texts,
    sequential_mass,
    weights_from_rows,
)
from stillroom.watermark.greenlist import GreenList
from stillroom.watermark.key import WatermarkKey

TOKEN_ID = "token_id:"
# What the OpenAI API caps chat top_logprobs at, and vLLM's default cap.
DEFAULT_TOP_K = 20


@dataclass
class TopK:
    """One text as an API read it: token t's id and the distribution it was drawn from
    (the alternatives at position t). -1 marks an unknown id; a row with no distribution
    (an echoed text's first token) has no alternatives."""

    ids: np.ndarray  # (T,) int64
    top_ids: np.ndarray  # (T, k) int64, -1 where missing
    top_p: np.ndarray  # (T, k) float64, 0 where missing


class TokenIds:
    """Token strings as an API returns them -> the teacher's ids."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        # Special tokens are not text we wrote: unknown, as in the open-weights reading.
        self.special = set(tokenizer.all_special_ids)
        self._by_text: dict[str, int] | None = None

    def __call__(self, token: str) -> int:
        if token.startswith(TOKEN_ID):
            i = int(token[len(TOKEN_ID) :])
            return -1 if i in self.special else i
        if self._by_text is None:
            self._by_text = self._texts()
        return self._by_text.get(token, -1)

    def _texts(self) -> dict[str, int]:
        """Each id's decoded text; a text several ids share maps to -1 (ambiguous)."""
        n = len(self.tokenizer)
        texts = self.tokenizer.batch_decode([[i] for i in range(n)])
        out: dict[str, int] = {}
        for i, text in enumerate(texts):
            out[text] = -1 if text in out or i in self.special else i
        return out


def _top_k(rows: list[tuple[int, list[tuple[int, float]]]], k: int) -> TopK:
    """(token id, [(alternative id, log-prob)...]) per position -> arrays."""
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    top_ids = np.full((len(rows), k), -1, dtype=np.int64)
    top_p = np.zeros((len(rows), k))
    for t, (_, alts) in enumerate(rows):
        for j, (i, lp) in enumerate(alts[:k]):
            top_ids[t, j], top_p[t, j] = i, np.exp(lp)
    return TopK(ids, top_ids, top_p)


class LogprobsApi:
    """An OpenAI-compatible API that returns top-k log-probs."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        tokenizer: Any,
        *,
        k: int = DEFAULT_TOP_K,
        concurrency: int = 8,
    ) -> None:
        self.base_url, self.model, self.api_key = base_url, model, api_key or "none"
        self.k, self.concurrency = k, concurrency
        self.token_ids = TokenIds(tokenizer)
        self.ask_ids = True  # vLLM's return_tokens_as_token_ids, until refused
        self.name = f"{model} at {base_url}"

    def text_topk(self, texts: Sequence[str]) -> list[TopK]:
        """The suspect's top-k at every token of each text (echo; the first has none)."""

        async def one(client: Any, _i: int, text: str) -> tuple[TopK, bool]:
            reply = await self._create(
                client.completions.create,
                model=self.model, prompt=text, echo=True, max_tokens=1, temperature=0,
                logprobs=self.k,
            )  # fmt: skip
            lp = reply.choices[0].logprobs
            if lp is None or not lp.tokens:
                raise InputError(f"{self.name}: echo returned no log-probs; it cannot read texts")
            n = len(lp.tokens) - 1  # the last token is the one generated after the text
            tops = lp.top_logprobs or [None] * len(lp.tokens)
            rows = [
                (self.token_ids(tok), [(self.token_ids(a), v) for a, v in (top or {}).items()])
                for tok, top in zip(lp.tokens[:n], tops[:n], strict=True)
            ]
            return _top_k(rows, self.k), self._spells(lp.tokens[:n], text)

        return self._ids_checked(lambda: self._all(one, texts))

    def echo_logprobs(self, texts: Sequence[str]) -> list[tuple[list[int], list[Any]]]:
        """(character offset, log-prob) of every token of each text, as the API read it;
        the first token's log-prob is None."""

        async def one(client: Any, _i: int, text: str) -> tuple[list[int], list[Any]]:
            reply = await client.completions.create(
                model=self.model, prompt=text, echo=True, max_tokens=1, temperature=0,
                logprobs=0,
            )  # fmt: skip
            lp = reply.choices[0].logprobs
            if lp is None or not lp.tokens or lp.text_offset is None:
                raise InputError(f"{self.name}: echo returned no log-probs for a text")
            n = len(lp.tokens) - 1  # the last token is the one generated after the text
            return list(lp.text_offset[:n]), list((lp.token_logprobs or [None] * n)[:n])

        return self._all(one, texts)

    def answer_topk(
        self, prompts: Sequence[str], *, max_tokens: int, temperature: float, seed: int
    ) -> list[TopK]:
        """The suspect's answer to each prompt, with its top-k at every token it wrote."""

        async def one(client: Any, i: int, prompt: str) -> tuple[TopK, bool]:
            reply = await self._create(
                client.chat.completions.create,
                model=self.model, messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens, temperature=temperature, seed=seed + i, logprobs=True,
                top_logprobs=self.k,
            )  # fmt: skip
            content = (reply.choices[0].logprobs and reply.choices[0].logprobs.content) or []
            rows = [
                (
                    self.token_ids(t.token),
                    [(self.token_ids(a.token), a.logprob) for a in t.top_logprobs],
                )
                for t in content
            ]
            said = reply.choices[0].message.content or ""
            return _top_k(rows, self.k), self._spells([t.token for t in content], said)

        return self._ids_checked(lambda: self._all(one, prompts))

    def _spells(self, tokens: Sequence[str], text: str) -> bool:
        """Whether ids the API returned spell `text` in the teacher's tokenizer: if not, the
        suspect has a tokenizer of its own and its ids mean other tokens."""
        if not self.ask_ids or not tokens or not tokens[0].startswith(TOKEN_ID):
            return True
        ids = [int(t[len(TOKEN_ID) :]) for t in tokens]
        decoded = self.token_ids.tokenizer.decode(ids, skip_special_tokens=True)
        return bool(decoded.strip() == text.strip())

    def _ids_checked(self, read: Callable[[], list[Any]]) -> list[TopK]:
        """Read; if most token ids do not spell their texts, read again by token strings."""
        got = read()
        if self.ask_ids and sum(not ok for _, ok in got) > len(got) / 2:
            self.ask_ids = False  # its own tokenizer: map tokens by their text instead
            got = read()
        return [top for top, _ in got]

    async def _create(self, call: Callable[..., Any], **body: Any) -> Any:
        import openai

        if self.ask_ids:
            try:
                return await call(**body, extra_body={"return_tokens_as_token_ids": True})
            except openai.BadRequestError as e:
                if "return_tokens_as_token_ids" not in str(e):
                    raise
                self.ask_ids = False  # not vLLM: token strings, mapped by their text
        return await call(**body)

    def _all(self, one: Any, items: Sequence[str]) -> list[Any]:
        """`one(client, i, item)` for every item, `concurrency` at a time, in order."""

        async def run() -> list[Any]:
            import openai

            client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=4)
            sem = asyncio.Semaphore(self.concurrency)

            async def bounded(i: int, item: str) -> Any:
                async with sem:
                    return await one(client, i, item)

            try:
                return list(await asyncio.gather(*(bounded(i, x) for i, x in enumerate(items))))
            finally:
                await client.close()

        return asyncio.run(run())


def topk_weights(tops: Sequence[TopK], width: int) -> tuple[Weights, list[np.ndarray]]:
    """The API's distributions as mass-test weights, and for each text the id sequence whose
    positions a baseline must read to see the same contexts (all but the last token: the
    distribution at token t belongs to the context that ends at t - 1)."""
    rows, probs, contexts = [], [], []
    for top in tops:
        t_all = np.arange(width, len(top.ids))
        for t in t_all:
            ctx = top.ids[t - width : t]
            have = top.top_ids[t] >= 0
            if (ctx < 0).any() or not have.any():
                continue
            tokens = top.top_ids[t][have]
            rows.append(np.column_stack([np.repeat(ctx[None], len(tokens), 0), tokens]))
            probs.append(top.top_p[t][have])
            contexts.append(ctx)
    if not rows:
        return Weights.empty(width), [top.ids[:-1] for top in tops]
    weights = weights_from_rows(np.concatenate(rows), np.concatenate(probs), np.stack(contexts))
    return weights, [top.ids[:-1] for top in tops]


def api_mass_test(
    api: LogprobsApi,
    key: WatermarkKey,
    tokenizer: Any,
    *,
    texts: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
    baseline_model: Any = None,
    baseline: str | None = None,
    budget: int = 2000,
    target_p: float = 1e-6,
    max_tokens: int = 128,
    temperature: float = 0.8,
    seed: int = 0,
    progress: Callable[[MassLook], None] | None = None,
) -> MassResult:
    """Green mass of the API's top-k on our unwatermarked `texts` (echo) or, without texts,
    on its own answers to `prompts`; `baseline_model` (a loaded LocalTeacher) reads the same
    positions, net of which the suspect is scored."""
    width = key.context_width
    if texts:
        items = list(texts[:budget])
        encoded = tokenizer(items, add_special_tokens=False)["input_ids"]
        refuse_marked_texts([np.asarray(x, dtype=np.int64) for x in encoded], GreenList(key))
    elif prompts:
        items = [prompts[i % len(prompts)] for i in range(budget)]
    else:
        raise InputError("--mode mass through an API needs --texts FILE or prompts to ask")
    asked = 0  # answers asked so far: each query's seed is seed + its index

    def read(chunk: Sequence[str]) -> tuple[Weights, Weights | None]:
        nonlocal asked
        if texts:
            tops = api.text_topk(chunk)
        else:
            tops = api.answer_topk(
                chunk, max_tokens=max_tokens, temperature=temperature, seed=seed + asked
            )
        asked += len(chunk)
        ours, positions = topk_weights(tops, width)
        if baseline_model is None:
            return ours, None
        base, _ = read_distributions(
            baseline_model, [], tokenizer, width, top_k=api.k, positions_of=positions
        )
        return ours, base

    return sequential_mass(
        read, items, key, suspect=api.name, baseline=baseline, target_p=target_p,
        progress=progress, source="api-texts" if texts else "api-answers", top_k=api.k,
    )  # fmt: skip
