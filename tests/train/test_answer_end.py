"""Answers cut at their stop string: training puts the string back, so a student learns
where an answer ends."""

from __future__ import annotations

import numpy as np

from stillroom.harvest.signals import encode_topk
from stillroom.train.data import AnswerEnd, Example, collate


def test_an_answer_cut_at_its_stop_string_gets_it_back_with_the_teachers_certainty() -> None:
    """A local teacher's stored answer ends before its stop string; training puts the
    string's tokens back so the student learns where an answer ends."""
    end = AnswerEnd(stop_ids=(7,), eos_ids=frozenset({1}))
    answer = np.asarray([5, 6], np.int64)
    assert end.complete(answer, "length")[1] == 0  # cut by max_tokens: nothing to add
    assert end.complete(np.asarray([5, 1]), "stop")[1] == 0  # ended by itself (EOS)
    completed, forced = end.complete(answer, "stop")
    assert completed.tolist() == [5, 6, 7] and forced == 1
    signals = encode_topk(np.asarray([[5, 9], [6, 9]]), np.asarray([[-0.1, -2.5], [-0.2, -1.9]]))
    ids = np.asarray([2, 3, 4, *completed.tolist()], np.int64)  # prompt 2 3 4, answer 5 6 7
    batch = collate([Example(ids, 3, signals, None, forced)], None, 0)
    assert batch.topk_ids is not None and batch.topk_logprobs is not None
    assert batch.loss_mask[0].tolist() == [False, False, True, True, True, False]
    assert batch.topk_ids[0, 2:5, 0].tolist() == [5, 6, 7]  # the added 7 is the teacher's top
    assert batch.topk_logprobs[0, 4, 0] == 0.0 and batch.topk_logprobs[0, 4, 1] == -np.inf
