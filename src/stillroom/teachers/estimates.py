"""Token counts of a request before it is sent: an upper bound (budgets, rate limits) and a
typical figure (dry-run estimates). Pure arithmetic on the request's text, no tokenizer.

A classification request (candidates to score) generates nothing: the teacher reads the
prompt and each candidate's few tokens, and answers with their log-probs.
"""

from __future__ import annotations

from stillroom.teachers.base import TeacherRequest

# Chat formatting adds a few tokens per message; byte-level BPE never yields more tokens
# than UTF-8 bytes, so bytes + overhead bounds the input tokens from above.
_PER_MESSAGE_OVERHEAD = 8
_PER_REQUEST_OVERHEAD = 16


def input_tokens_upper_bound(request: TeacherRequest) -> int:
    n_messages = len(request.messages) if request.messages else 1
    text = request.text_for_estimate()
    return len(text.encode()) + _PER_MESSAGE_OVERHEAD * n_messages + _PER_REQUEST_OVERHEAD


def input_tokens_estimate(request: TeacherRequest) -> int:
    """A typical figure (~4 characters per token) for dry-run estimates, not a bound."""
    return max(1, len(request.text_for_estimate()) // 4) + 4


def output_tokens_upper_bound(request: TeacherRequest) -> int:
    """The most tokens the teacher may generate: none when it scores candidates."""
    if request.candidates:
        return 0
    return (request.params.max_tokens or 0) * request.params.n
