"""Vocabulary trimming: a teacher's BPE tokenizer cut down to the tokens a task uses.

A shrunk student keeps only the embedding rows (and output logits) of the teacher tokens
the harvest and the task use, so its output layer is thousands of rows rather than Gemma's
262,144. The trimmed tokenizer must still split text exactly as the teacher does, or the
harvested token ids would no longer line up with the student's:

    student(text).input_ids == [teacher_to_student[i] for i in teacher(text).input_ids]

for every text the teacher tokenizes into kept tokens. What is kept:

- the added tokens (<bos>, <eos>, <start_of_turn>, newline runs, ...), except reserved
  `<unusedN>` placeholders that never occur in text (6,242 of them in Gemma) unless asked for;
- the byte tokens: `<0x00>`..`<0xFF>` for a byte-fallback BPE, the 256 byte characters for a
  byte-level BPE, so any unseen text still tokenizes;
- the given ids, and their closure under the BPE merges: every token the merges pass through
  on the way to a kept token.

Why the closure suffices: BPE applies, at each step, the lowest-ranked merge available in the
word. A kept token's merges involve only its own span, so they are the merges BPE applies to
that token's text alone, which `_derivation` replays. The student's merges are the teacher's
merges whose parts and result are kept, in the same order: a subset that contains every merge
the teacher applied, so at every step the student picks the teacher's merge, and stops when
the teacher stops. Added tokens split text first; the student's added tokens are a subset
of the teacher's, so for text without dropped ones the split is the same.

Also here: the student's transformers tokenizer around a trimmed one, special-token ids
in the student's numbering, and the map between two different tokenizers by token string.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom.errors import VocabTrimError as VocabTrimError  # its home before the tree

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

UNUSED_TOKEN = re.compile(r"<unused\d+>")
BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


@dataclass(frozen=True)
class TrimmedVocab:
    """A trimmed tokenizer: its tokenizer.json and the teacher id of each student id."""

    to_teacher: np.ndarray  # (V_student,) int64, ascending teacher ids
    tokenizer_json: dict[str, Any]

    def teacher_to_student(self) -> dict[int, int]:
        return {int(t): s for s, t in enumerate(self.to_teacher)}

    def tokenizer(self) -> Any:
        """The trimmed `tokenizers.Tokenizer`."""
        from tokenizers import Tokenizer

        return Tokenizer.from_str(json.dumps(self.tokenizer_json, ensure_ascii=False))


def trim_vocab(tokenizer_file: Path, keep_ids: Iterable[int]) -> TrimmedVocab:
    """Trim the tokenizer.json at `tokenizer_file` to `keep_ids` and what they need."""
    tok = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
    kept = kept_teacher_ids(tok, keep_ids)
    return TrimmedVocab(to_teacher=kept, tokenizer_json=remap_tokenizer_json(tok, kept))


def kept_teacher_ids(tok: dict[str, Any], keep_ids: Iterable[int]) -> np.ndarray:
    """Teacher ids to keep, ascending: the given ids, added and byte tokens, merge closure."""
    model = _bpe_model(tok)
    vocab: dict[str, int] = model["vocab"]
    id_to_token = _id_to_token(tok)
    wanted = {int(i) for i in keep_ids}
    unknown = sorted(i for i in wanted if i not in id_to_token)
    if unknown:
        raise VocabTrimError(
            f"token ids {unknown[:5]} are not in the teacher's vocabulary "
            f"(0..{max(id_to_token)}); collect keep ids with the teacher's tokenizer"
        )
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    kept = set(wanted)
    kept |= {i for i, a in added.items() if not UNUSED_TOKEN.fullmatch(a["content"])}
    kept |= {vocab[t] for t in _byte_tokens(tok) if t in vocab}
    ranks = _merge_ranks(model)
    for i in sorted(kept):
        token = id_to_token[i]
        special = i in added and added[i].get("special", False)
        if token in vocab and not special and not BYTE_TOKEN.fullmatch(token):
            kept |= {vocab[t] for t in _derivation(token, vocab, ranks, model) if t in vocab}
    return np.array(sorted(kept), dtype=np.int64)


def remap_tokenizer_json(tok: dict[str, Any], kept: np.ndarray) -> dict[str, Any]:
    """A copy of a tokenizer.json holding only `kept` teacher ids, renumbered 0..len-1.

    Merges whose parts and result are all kept stay, in their order (their ranks); added
    tokens and the post-processor's special-token ids are renumbered; the normalizer,
    pre-tokenizer and decoder carry over unchanged.
    """
    new_id = {int(t): s for s, t in enumerate(kept)}
    out = {k: v for k, v in tok.items() if k != "model"}
    model = {k: v for k, v in tok["model"].items() if k not in ("vocab", "merges")}
    vocab = {t: new_id[i] for t, i in tok["model"]["vocab"].items() if i in new_id}
    model["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    model["merges"] = [
        m for m in tok["model"]["merges"] if all(p in vocab for p in (*_pair(m), _merged(_pair(m))))
    ]
    out["model"] = model
    out["added_tokens"] = [
        {**a, "id": new_id[a["id"]]} for a in tok.get("added_tokens", []) if a["id"] in new_id
    ]
    out["post_processor"] = _remap_ids(copy.deepcopy(tok.get("post_processor")), new_id)
    return out


def student_tokenizer(
    trimmed: TrimmedVocab, teacher_tok: PreTrainedTokenizerBase
) -> PreTrainedTokenizerFast:
    """The trimmed tokenizer with the teacher's special tokens, chat template and sides."""
    from transformers import PreTrainedTokenizerFast

    specials = {k: v for k, v in teacher_tok.special_tokens_map.items() if isinstance(v, str)}
    return PreTrainedTokenizerFast(
        tokenizer_object=trimmed.tokenizer(),
        extra_special_tokens=list(getattr(teacher_tok, "extra_special_tokens", []) or []),
        chat_template=teacher_tok.chat_template,
        # Gemma's tokenizer class pads on the left; the generic class would pad right.
        padding_side=teacher_tok.padding_side,
        truncation_side=teacher_tok.truncation_side,
        model_max_length=teacher_tok.model_max_length,
        **specials,
    )


def remap_token_ids(d: dict[str, Any], new_id: dict[int, int]) -> dict[str, Any]:
    """bos/eos/pad ids of a (generation) config dict in the student's numbering.

    One id or a list of ids; an id the student lacks becomes None or leaves the list.
    """
    out: dict[str, Any] = {}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        value = d.get(key)
        if isinstance(value, int):
            out[key] = new_id.get(value)
        elif isinstance(value, list):
            out[key] = [new_id[i] for i in value if i in new_id]
    return out


def map_by_token_string(
    tokenizer: PreTrainedTokenizerBase,
    rows: int,
    teacher_tok: PreTrainedTokenizerBase,
    teacher_rows: int,
) -> np.ndarray | None:
    """(rows,) int64: each student id's teacher id with the same token string, -1 if none.

    None when both vocabularies (and embedding row counts) are the same.
    """
    student_vocab = tokenizer.get_vocab()
    teacher_vocab = teacher_tok.get_vocab()
    if rows == teacher_rows and student_vocab == teacher_vocab:
        return None
    out = np.full(rows, -1, dtype=np.int64)
    for token, i in student_vocab.items():
        if i < rows:
            out[i] = teacher_vocab.get(token, -1)
    return out


# --- BPE replay ----------------------------------------------------------------------------


def _derivation(
    token: str, vocab: dict[str, int], ranks: dict[tuple[str, str], int], model: dict[str, Any]
) -> list[str]:
    """Every symbol BPE passes through when it tokenizes `token`'s text alone."""
    symbols: list[str] = []
    for ch in token:
        if ch in vocab:
            symbols.append(ch)
        elif model.get("byte_fallback"):
            symbols.extend(f"<0x{b:02X}>" for b in ch.encode("utf-8"))
    seen = list(symbols)
    while len(symbols) > 1:
        # Lowest rank first, leftmost on a tie: the order `tokenizers` applies merges in.
        candidates = [
            (ranks[pair], i) for i, pair in enumerate(itertools.pairwise(symbols)) if pair in ranks
        ]
        if not candidates:
            break
        _, i = min(candidates)
        merged = _merged((symbols[i], symbols[i + 1]))
        symbols[i : i + 2] = [merged]
        seen.append(merged)
    return seen


def _merge_ranks(model: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {_pair(m): r for r, m in enumerate(model["merges"])}


def _pair(merge: list[str] | str) -> tuple[str, str]:
    # tokenizers >= 0.20 writes [left, right]; older files write "left right".
    if isinstance(merge, str):
        left, _, right = merge.partition(" ")
        return left, right
    return merge[0], merge[1]


def _merged(pair: tuple[str, str]) -> str:
    # Without a subword prefix or suffix (checked in `_bpe_model`), a merge concatenates.
    return pair[0] + pair[1]


# --- tokenizer.json plumbing ---------------------------------------------------------------


def _bpe_model(tok: dict[str, Any]) -> dict[str, Any]:
    model = tok.get("model", {})
    if model.get("type") != "BPE":
        raise VocabTrimError(
            f"vocabulary trimming needs a BPE tokenizer, not {model.get('type')!r}; "
            "set student.trim_vocab: false"
        )
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise VocabTrimError(
            "vocabulary trimming does not support BPE subword prefixes or suffixes; "
            "set student.trim_vocab: false"
        )
    return model


def _id_to_token(tok: dict[str, Any]) -> dict[int, str]:
    out = {i: t for t, i in tok["model"]["vocab"].items()}
    out.update({a["id"]: a["content"] for a in tok.get("added_tokens", [])})
    return out


def _byte_tokens(tok: dict[str, Any]) -> list[str]:
    """The tokens any text can fall back to: byte-fallback tokens or byte-level characters."""
    tokens: list[str] = []
    if tok["model"].get("byte_fallback"):
        tokens += [f"<0x{b:02X}>" for b in range(256)]
    if _uses_byte_level(tok.get("pre_tokenizer")):
        from tokenizers import pre_tokenizers

        tokens += pre_tokenizers.ByteLevel.alphabet()
    return tokens


def _uses_byte_level(component: Any) -> bool:
    if not isinstance(component, dict):
        return False
    if component.get("type") == "ByteLevel":
        return True
    return any(_uses_byte_level(c) for c in component.get("pretokenizers", []))


def _remap_ids(node: Any, new_id: dict[int, int]) -> Any:
    """Renumber the token ids inside a post-processor (template, BERT and RoBERTa styles)."""
    if isinstance(node, list):
        return [_remap_ids(n, new_id) for n in node]
    if not isinstance(node, dict):
        return node
    for key, value in node.items():
        if key == "ids" and isinstance(value, list):
            node[key] = [_renumber(i, new_id) for i in value]
        elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:
            node[key] = [value[0], _renumber(value[1], new_id)]
        else:
            node[key] = _remap_ids(value, new_id)
    return node


def _renumber(teacher_id: int, new_id: dict[int, int]) -> int:
    if teacher_id not in new_id:
        raise VocabTrimError(
            f"the post-processor uses token id {teacher_id}, which the trim dropped; "
            "add it to the kept ids"
        )
    return new_id[teacher_id]
