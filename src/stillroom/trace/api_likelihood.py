"""The served-answer likelihood test through an API's prompt log-probs (grey box).

`stillroom.trace.served.likelihood_test` asks whether a suspect finds the answers we served
likelier than fresh twins of each. With open weights the suspect reads each chat prompt and
answer here; through an API the same numbers come from `completions` with `echo` and
`logprobs` (vLLM, `stillroom serve`): the suspect's log-prob of every token of a text.

The text is the chat prompt rendered with the teacher's chat template (a distilled model
keeps its teacher's template as a rule; one that does not scores both answers of a pair
under the same wrong template, so the pair stays fair) followed by the answer. The
template's own <bos> is left out, since a completions endpoint adds its own. The score of an
answer is the mean log-prob of the tokens that start at or after the answer's first
character, as `answer_logprobs` scores the answer's tokens after the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stillroom.errors import InputError
from stillroom.trace.api_mass import LogprobsApi

Messages = tuple[tuple[str, str], ...]


def chat_prefix(tokenizer: Any, messages: Messages) -> str:
    """The chat prompt as text, ready for the answer; without a leading <bos>."""
    head = str(
        tokenizer.apply_chat_template(
            [{"role": r, "content": c} for r, c in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
    )
    bos = getattr(tokenizer, "bos_token", None)
    return head[len(bos) :] if bos and head.startswith(bos) else head


def api_answer_logprobs(
    api: LogprobsApi, tokenizer: Any, messages: Sequence[Messages], answers: Sequence[str]
) -> np.ndarray:
    """Mean log-prob per token of each answer after its chat prompt, as the API scores it."""
    heads = [chat_prefix(tokenizer, m) for m in messages]
    scored = api.echo_logprobs([h + a for h, a in zip(heads, answers, strict=True)])
    out = np.full(len(heads), np.nan)
    for i, (head, (offsets, logprobs)) in enumerate(zip(heads, scored, strict=True)):
        if not answers[i]:
            continue
        mine = [lp for at, lp in zip(offsets, logprobs, strict=True) if at >= len(head)]
        if not mine or any(lp is None for lp in mine):
            raise InputError(
                f"{api.name}: echo gave no log-prob for the answer tokens; the served "
                "likelihood test needs an API that returns prompt log-probs (echo with "
                "logprobs); use --served-by answers"
            )
        out[i] = float(np.mean(mine))
    return out
