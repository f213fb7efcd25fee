"""Vocabulary trimming: the trimmed tokenizer splits kept text exactly as the teacher does.

Two tiny BPE tokenizers trained in the session: the byte-level one of tests/helpers/tiny_models.py
and a Gemma-style one (spaces as ▁, byte fallback, <unusedN> placeholders).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stillroom.train.vocab import (
    TrimmedVocab,
    VocabTrimError,
    kept_teacher_ids,
    remap_tokenizer_json,
    trim_vocab,
)
from tests.helpers.tiny_models import SENTENCES, make_tiny_tokenizer

UNSEEN = "Zebras quaff 42 €uros — naïve 日本語 🦓\n\ttabs"


def make_gemma_style_tokenizer(directory: Path) -> Path:
    """A BPE like Gemma's: ' ' -> '▁' normalizer, byte fallback, added placeholder tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<unused0>", "<unused1>", "<start_of_turn>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for b in range(256):  # Gemma's byte tokens are ordinary vocab entries
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": "<bos>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
        ],
        "pair": [
            {"SpecialToken": {"id": "<bos>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [vocab["<bos>"]], "tokens": ["<bos>"]}},
    }
    path = directory / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


@pytest.fixture(scope="module", params=["byte_level", "gemma_style"])
def teacher_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "byte_level":
        make_tiny_tokenizer(directory)
        return directory / "tokenizer.json"
    return make_gemma_style_tokenizer(directory)


@pytest.fixture(scope="module")
def teacher(teacher_file: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(teacher_file))


def ids_of(tokenizer: Any, texts: list[str]) -> set[int]:
    return {i for t in texts for i in tokenizer.encode(t).ids}


def assert_same_split(trimmed: TrimmedVocab, teacher: Any, text: str) -> None:
    new_id = trimmed.teacher_to_student()
    want = [new_id[i] for i in teacher.encode(text).ids]
    assert trimmed.tokenizer().encode(text).ids == want, text


@settings(max_examples=25, deadline=None)
@given(chosen=st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=4, unique=True))
def test_kept_texts_split_as_the_teacher_splits_them(
    teacher_file: Path, teacher: Any, chosen: list[str]
) -> None:
    trimmed = trim_vocab(teacher_file, ids_of(teacher, chosen))
    for text in chosen:
        assert_same_split(trimmed, teacher, text)
    assert_same_split(trimmed, teacher, "\n".join(chosen))
    assert len(trimmed.to_teacher) < teacher.get_vocab_size()


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_text_of_kept_tokens_splits_the_same(
    teacher_file: Path, teacher: Any, data: st.DataObject
) -> None:
    # Text glued from kept tokens in any order: where the teacher's split uses only kept
    # tokens (it may merge across the seams), the student's must be the same.
    trimmed = trim_vocab(teacher_file, ids_of(teacher, SENTENCES[:3]))
    new_id = trimmed.teacher_to_student()
    picks = data.draw(st.lists(st.sampled_from(trimmed.to_teacher.tolist()), max_size=8))
    text = teacher.decode(picks, skip_special_tokens=False)
    ids = teacher.encode(text, add_special_tokens=False).ids
    if all(i in new_id for i in ids):
        got = trimmed.tokenizer().encode(text, add_special_tokens=False).ids
        assert got == [new_id[i] for i in ids]


def test_unseen_text_still_tokenizes_and_decodes(teacher_file: Path, teacher: Any) -> None:
    trimmed = trim_vocab(teacher_file, ids_of(teacher, SENTENCES[:1]))
    tok = trimmed.tokenizer()
    enc = tok.encode(UNSEEN, add_special_tokens=False)
    assert "<unk>" not in enc.tokens
    assert tok.decode(enc.ids) == teacher.decode(teacher.encode(UNSEEN).ids)


def test_kept_set_and_ordering(teacher_file: Path, teacher: Any) -> None:
    data = json.loads(teacher_file.read_text())
    kept = kept_teacher_ids(data, [])
    assert kept.tolist() == sorted(set(kept.tolist()))
    added = {a["content"]: a["id"] for a in data["added_tokens"]}
    for name in ("<bos>", "<eos>", "<pad>", "<unk>"):
        assert added[name] in kept
    unused = [i for t, i in added.items() if t.startswith("<unused")]
    assert not set(unused) & set(kept.tolist())
    # Asking for a placeholder keeps it.
    if unused:
        assert unused[0] in kept_teacher_ids(data, [unused[0]])
    # Specials come first, as they do in the teacher.
    trimmed = TrimmedVocab(kept, remap_tokenizer_json(data, kept))
    assert trimmed.tokenizer().token_to_id("<pad>") == 0


def test_merges_keep_their_order_and_only_kept_parts(teacher_file: Path, teacher: Any) -> None:
    data = json.loads(teacher_file.read_text())
    trimmed = trim_vocab(teacher_file, ids_of(teacher, SENTENCES[:2]))
    vocab = trimmed.tokenizer_json["model"]["vocab"]
    merges = [tuple(m) for m in trimmed.tokenizer_json["model"]["merges"]]
    rank = {tuple(m): r for r, m in enumerate(data["model"]["merges"])}
    assert [rank[m] for m in merges] == sorted(rank[m] for m in merges)
    assert all(a in vocab and b in vocab and a + b in vocab for a, b in merges)
    assert sorted(vocab.values()) == list(range(len(vocab)))


def test_post_processor_ids_are_renumbered(teacher_file: Path, teacher: Any) -> None:
    trimmed = trim_vocab(teacher_file, ids_of(teacher, SENTENCES[:1]))
    tok = trimmed.tokenizer()
    first = tok.encode("hello").ids[0]
    assert first == tok.token_to_id("<bos>")
    assert trimmed.to_teacher[first] == teacher.token_to_id("<bos>")


def test_bad_inputs_say_what_to_do(teacher_file: Path, tmp_path: Path) -> None:
    with pytest.raises(VocabTrimError, match="not in the teacher's vocabulary"):
        trim_vocab(teacher_file, [10**7])
    word_level = {"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}}
    with pytest.raises(VocabTrimError, match="trim_vocab: false"):
        kept_teacher_ids(word_level, [0])
