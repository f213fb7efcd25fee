"""Reading mode on tiny real models: a model fine-tuned on our watermarked texts predicts
green tokens on fresh ones (watermarked or not); the teacher itself without the watermark,
which predicts our texts well, is not convicted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stillroom.errors import InputError
from stillroom.trace.reading import read_mode_test, vocab_map
from stillroom.watermark.key import WatermarkKey
from tests.helpers.tiny_models import make_tiny_tokenizer, watermarked_student

# Width 1: at this tiny scale (192 short training texts) the student learns pairs, not the
# triples a width-2 key would need; the width that traces best at Gemma scale is measured
# separately.
KEY = WatermarkKey(b"r" * 32, delta=3.0, context_width=1)


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return watermarked_student(tmp_path_factory.mktemp("read"), KEY)


def test_a_student_of_our_texts_is_caught_reading_fresh_ones(setting: dict) -> None:
    r = read_mode_test(
        str(setting["root"] / "student"),
        setting["texts"][192:],
        KEY,
        setting["tokenizer"],
        budget=64,
        target_p=1e-12,
    )
    assert r.mode == "read" and r.queries == 64 and [lk.queries for lk in r.looks] == [50, 64]
    assert r.p_value < 1e-3 and r.green_rate > KEY.gamma + 0.03, r


def test_unwatermarked_texts_catch_it_too(setting: dict) -> None:
    # They say nothing about the key, yet the student predicts green after what it learned.
    r = read_mode_test(
        str(setting["root"] / "student"), setting["plain"], KEY, setting["tokenizer"], budget=64
    )
    assert r.p_value < 1e-3 and r.green_rate > KEY.gamma + 0.03, r
    clean = read_mode_test(
        str(setting["root"] / "teacher"), setting["plain"], KEY, setting["tokenizer"], budget=64
    )
    assert clean.p_value > 0.01, clean


def test_the_unwatermarked_teacher_is_not_convicted(setting: dict) -> None:
    r = read_mode_test(
        str(setting["root"] / "teacher"), setting["texts"], KEY, setting["tokenizer"], budget=256
    )
    assert r.tuples_scored > 500  # it did predict: the test had material
    assert r.p_value > 0.01, r
    assert all(lk.p_adjusted >= lk.p_value for lk in r.looks)


def test_vocabularies_map_by_token_string(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    make_tiny_tokenizer(tmp_path / "big")
    make_tiny_tokenizer(tmp_path / "small", vocab_size=300)
    big = AutoTokenizer.from_pretrained(tmp_path / "big")
    small = AutoTokenizer.from_pretrained(tmp_path / "small")
    m = vocab_map(small, big)
    for token, i in small.get_vocab().items():
        if i not in small.all_special_ids:
            assert m[i] == big.get_vocab()[token]
    assert (m[small.all_special_ids] == -1).all()
    assert (vocab_map(big, big)[300:] == np.arange(300, len(big))).all()


def test_reading_without_texts_says_what_to_give() -> None:
    with pytest.raises(InputError, match="--texts"):
        read_mode_test("nowhere", [], KEY, None)
