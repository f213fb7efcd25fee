"""Name the derived word a WordNet definition describes: a real-text generation task.

Source: WordNet 3.0 (Debian package `wordnet-base`, never a model hub): `index.*` lists each
lemma's senses most frequent first, `data.*` holds each sense's gloss and its pointers
(wndb(5)). A derivationally related form (`+`) or pertainym (`\\`) pointer from a lemma
names the word it is built from: "magically" points to "magical".

An item is one derived word's first sense whose definition uses the word it is built from:

    input (the student's `text`):  in a magical manner (adverb)
    reference (`word`):            magically

So the answer's stem is in the input, and the task is to find it and give it the right
affix for the part of speech (-ly, -ness, -ity, -er, -ist, -al, -ic, -able, -less, ...): a
small student can learn that from a few thousand answers, without memorising rare words.

Why this task and not writing definitions: on 150 items each, Gemma 3 270M with a few-shot
prompt did not beat copying the input (corpus chrF against WordNet's text) when writing a
common noun's definition from "beagle (a kind of hound)" (17.0 vs 19.0), a derived word's
definition (24.0 vs 20.8), or an example sentence (22.3 vs 26.7). Here it scores 59.0
against 37.6 for copying and 9.0 for the most common answer (339 test items; README).

- Kept: single lowercase words (no names, no digits), the lemma's first sense, a pointer
  from that very lemma to a shorter word whose stem (all but its last two letters, at least
  four) starts a word of the definition, a definition (the gloss's first clause, asides in
  parentheses dropped) of 3 to 20 words.
- Left out: any definition given to two items (two synonyms derived alike, "abolishment"
  and "abolition": no single reference), and the few-shot examples (`FEW_SHOT`), by synset,
  word and definition (another WordNet version may renumber them), so nothing the teacher
  was shown is scored.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stillroom.errors import InputError
from stillroom.reportkit.files import write_atomic
from stillroom.tasks.wordnet import clean_gloss, find_wordnet

TASK_FILE = "wordnet-derived.jsonl"
TRANSFER_FILE = "wordnet-derived-transfer.jsonl"  # prompts without references (--transfer)
MIN_WORDS, MAX_WORDS = 3, 20
# WordNet's file suffixes and the part-of-speech names the prompt uses.
PARTS = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
_POINTER_POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
_DERIVED_FROM = ("+", "\\")  # derivationally related form; pertainym (adjectives, adverbs)
_PLAIN_WORD = re.compile(r"^[a-z]+$")
_PARENTHESES = re.compile(r"\s*\([^()]*\)")


@dataclass(frozen=True)
class Item:
    """One derived word's first sense, ready to become a dataset row."""

    id: str  # part-of-speech letter + data file offset ("r00437381")
    word: str  # the reference answer
    part: str  # "adverb"
    base: str  # the word it is built from
    definition: str

    @property
    def text(self) -> str:
        """What the student reads: the definition and the part of speech."""
        return f"{self.definition} ({self.part})"


def reference_definition(gloss: str) -> str:
    """The gloss's first clause, asides in parentheses and example sentences dropped."""
    first = clean_gloss(gloss).split(";")[0]
    return re.sub(r"\s+", " ", _PARENTHESES.sub("", first)).strip().rstrip(",:")


# ---- reading WordNet ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Synset:
    words: tuple[str, ...]  # lemmas as written, adjective markers such as "(a)" dropped
    pointers: tuple[tuple[str, str, str, str], ...]  # (symbol, offset, pos, source/target)
    gloss: str


def read_synsets(path: Path) -> dict[str, _Synset]:
    """A data.* file's synsets by offset (license lines skipped)."""
    synsets: dict[str, _Synset] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("  ") or not line.strip():
                continue
            try:
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                at = 4 + 2 * int(fields[3], 16)  # the word count is hexadecimal
                pointers = tuple(
                    (fields[p], fields[p + 1], fields[p + 2], fields[p + 3])
                    for p in range(at + 1, at + 1 + 4 * int(fields[at]), 4)
                )
                words = tuple(w.split("(")[0] for w in fields[4:at:2])
                synsets[fields[0]] = _Synset(words, pointers, gloss.strip())
            except (ValueError, IndexError) as e:
                raise InputError(
                    f"{path}:{number}: not a WordNet data line ({e}); point WNSEARCHDIR "
                    "at an unmodified WordNet 3.0 database"
                ) from None
    return synsets


Synsets = dict[str, dict[str, _Synset]]  # part-of-speech file suffix -> offset -> synset


def senses(index: Path) -> Iterator[tuple[str, list[str]]]:
    """(lemma, offsets of its senses, most frequent first) for each lemma of an index.*
    file."""
    with index.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  ") or not line.strip():
                continue
            fields = line.split()
            yield fields[0], fields[-int(fields[2]) :]  # synset_cnt offsets end the line


def first_senses(index: Path) -> Iterator[tuple[str, str]]:
    """(lemma, offset of its most frequent sense) for each lemma of an index.* file."""
    for lemma, offsets in senses(index):
        yield lemma, offsets[0]


def bases(lemma: str, synset: _Synset, data: Synsets, *, shorter: bool = True) -> Iterator[str]:
    """The words a derivation or pertainym pointer from `lemma` names: those it is built
    from (shorter than it), or with `shorter=False` every linked word."""
    lowered = [w.lower() for w in synset.words]
    if lemma not in lowered:
        return
    source = lowered.index(lemma) + 1
    for symbol, offset, pos, source_target in synset.pointers:
        if symbol not in _DERIVED_FROM or int(source_target[:2], 16) != source:
            continue
        target = int(source_target[2:], 16)
        if target == 0:  # a pointer between whole synsets names no word
            continue
        base = data[_POINTER_POS[pos]][offset].words[target - 1].lower()
        if len(base) < len(lemma) or not shorter:
            yield base


def base_word(lemma: str, synset: _Synset, data: Synsets, definition: str) -> str | None:
    """The shorter word `lemma` is derived from, if the definition uses its stem."""
    for base in bases(lemma, synset, data):
        stem = base[: max(4, len(base) - 2)]
        if re.search(r"\b" + re.escape(stem), definition):
            return base
    return None


def read_data(folder: Path) -> Synsets:
    """Every data.* file of a WordNet folder, read once for all the task's passes."""
    return {pos: read_synsets(folder / f"data.{pos}") for pos in PARTS}


def eligible_items(folder: Path, data: Synsets | None = None) -> list[Item]:
    """Every usable item, part of speech by part of speech in index order (module doc);
    `data` is `read_data(folder)` when the caller has it already."""
    data = data or read_data(folder)
    shot_ids = {item_id for item_id, _, _, _ in FEW_SHOT}
    shot_words = {word for _, word, _, _ in FEW_SHOT}
    shot_texts = {definition for _, _, _, definition in FEW_SHOT}
    items = []
    for pos, part in PARTS.items():
        for lemma, offset in first_senses(folder / f"index.{pos}"):
            item_id = f"{pos[0] if pos != 'adv' else 'r'}{offset}"
            if not _PLAIN_WORD.match(lemma) or item_id in shot_ids or lemma in shot_words:
                continue
            synset = data[pos][offset]
            definition = reference_definition(synset.gloss)
            if definition in shot_texts or not MIN_WORDS <= len(definition.split()) <= MAX_WORDS:
                continue
            base = base_word(lemma, synset, data, definition)
            if base is not None:
                items.append(Item(item_id, lemma, part, base, definition))
    seen = Counter(i.definition for i in items)
    return [i for i in items if seen[i.definition] == 1]


def transfer_items(
    folder: Path, items: list[Item], data: Synsets | None = None
) -> tuple[list[Item], list[Item]]:
    """Prompts for a transfer set: derived words' senses that are not items, in the task's
    form, for the teacher to answer and the student to learn from (prompts.transfer_path).

    Any sense of a lemma whose definition uses the stem of a shorter word it is built from
    (as items do: "the act of abdicating (noun)"), and the first sense of any other lemma
    with a derivation or pertainym pointer ("the act of giving something up (noun)",
    "give up, such as power (verb)"). None has an item's
    word or definition, or a prompt example's, so nothing scored is taught; each definition
    appears once. Their `word` stays out of the transfer file: a transfer set has no gold.
    Returns (the senses like items, the other linked words' senses), in index order.
    """
    data = data or read_data(folder)
    taken_words = {i.word for i in items} | {word for _, word, _, _ in FEW_SHOT}
    taken = {i.definition for i in items} | {definition for *_, definition in FEW_SHOT}
    alike: list[Item] = []
    linked: list[Item] = []
    for pos, part in PARTS.items():
        for lemma, offsets in senses(folder / f"index.{pos}"):
            if not _PLAIN_WORD.match(lemma) or lemma in taken_words:
                continue
            for rank, offset in enumerate(offsets):
                synset = data[pos][offset]
                definition = reference_definition(synset.gloss)
                if definition in taken or not MIN_WORDS <= len(definition.split()) <= MAX_WORDS:
                    continue
                base = base_word(lemma, synset, data, definition)
                kind = alike
                if base is None and rank == 0:
                    base, kind = next(bases(lemma, synset, data, shorter=False), None), linked
                if base is not None:
                    taken.add(definition)
                    item_id = f"t{pos[0] if pos != 'adv' else 'r'}{offset}-{lemma}"
                    kind.append(Item(item_id, lemma, part, base, definition))
    return alike, linked


# ---- the teacher's prompt ----------------------------------------------------------------

# (id, word, part of speech, definition): real WordNet 3.0 items, excluded from every
# dataset. One per common pattern (an adverb, an agent noun, a relational adjective, a
# quality noun, a process noun).
FEW_SHOT: list[tuple[str, str, str, str]] = [
    ("r00437381", "strangely", "adverb", "in a strange manner"),
    ("n10277638", "lutanist", "noun", "a musician who plays the lute"),
    ("a02986741", "artifactual", "adjective", "of or relating to artifacts"),
    ("n14497233", "tidiness", "noun", "the habit of being tidy"),
    ("n13483726", "fossilization", "noun",
     "the process of fossilizing a plant or animal that existed in some earlier age"),
]  # fmt: skip


def format_item(text: str) -> str:
    """One item as the teacher reads it, ending where the word comes next."""
    return f"Definition: {text}\nWord:"


FEW_SHOT_PREFIX = "".join(
    f"{format_item(f'{definition} ({part})')} {word}\n\n" for _, word, part, definition in FEW_SHOT
)
STOP = "\n"  # the answer ends with its line


def prompt_for(text: str) -> str:
    """The teacher's prompt for one item: the few-shot prefix, then the item."""
    return FEW_SHOT_PREFIX + format_item(text)


# ---- trivial answers ---------------------------------------------------------------------


def copy_answers(rows: list[dict[str, str]]) -> list[str]:
    """Each item's input copied as its answer: the first trivial baseline."""
    return [r["text"] for r in rows]


def most_common_answer(references: list[str]) -> str:
    """The reference given most often (ties: the first seen): the second trivial baseline,
    one answer for every item."""
    return Counter(references).most_common(1)[0][0]


# ---- the dataset -------------------------------------------------------------------------


def build_derived_task(
    out_dir: Path,
    *,
    items: int | None = None,
    seed: int = 0,
    source: Path | None = None,
    transfer: int = 0,
) -> Path:
    """Write `items` rows (default: every eligible item, 4,982 in WordNet 3.0) to
    out_dir/wordnet-derived.jsonl; return its path. With `transfer` > 0, also write that
    many transfer prompts (`transfer_items`: those like items first; no reference) to
    out_dir/wordnet-derived-transfer.jsonl.

    Rows: {"id": "r00437381", "prompt": the teacher's few-shot prompt, "text": "in a
    magical manner (adverb)", "word": the reference, "part", "base", "definition"}, drawn at
    random (seeded) from every eligible item; transfer rows have id, prompt, text and part.
    The same source, items and seed give the same files byte for byte. `source` is a
    WordNet folder (default: the one `find_wordnet()` finds). Written to a temporary name
    and renamed.
    """
    if items is not None and items < 1:
        raise InputError(f"items is {items}; ask for 1 or more")
    if transfer < 0:
        raise InputError(f"transfer is {transfer}; ask for 0 (none) or more")
    folder = source or find_wordnet().parent
    missing = [
        name for pos in PARTS for name in (f"data.{pos}", f"index.{pos}")
        if not (folder / name).is_file()
    ]  # fmt: skip
    if missing:
        raise InputError(
            f"{folder} lacks {', '.join(missing)}; install WordNet 3.0 with `apt-get install "
            "wordnet-base`, or set WNSEARCHDIR to a folder holding it"
        )
    data = read_data(folder)
    pool = eligible_items(folder, data)
    items = len(pool) if items is None else items
    if len(pool) < items:
        raise InputError(
            f"{folder}: only {len(pool)} usable items for items={items}; ask for fewer"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": i.id, "prompt": prompt_for(i.text), "text": i.text, "word": i.word,
         "part": i.part, "base": i.base, "definition": i.definition}
        for i in random.Random(seed).sample(pool, items)
    ]  # fmt: skip
    target = _write_rows(out_dir / TASK_FILE, rows)
    if transfer:
        _write_transfer(out_dir / TRANSFER_FILE, transfer_items(folder, pool, data), transfer, seed)
    return target


def _write_transfer(
    target: Path, kinds: tuple[list[Item], list[Item]], transfer: int, seed: int
) -> None:
    """`transfer` prompts: those like the items first, then other linked words', at random."""
    alike, linked = kinds
    if len(alike) + len(linked) < transfer:
        raise InputError(
            f"this WordNet has only {len(alike) + len(linked)} transfer prompts for "
            f"transfer={transfer}; ask for fewer"
        )
    draw = random.Random(seed)
    picked = draw.sample(alike, min(transfer, len(alike)))
    picked += draw.sample(linked, transfer - len(picked))
    _write_rows(target, [
        {"id": i.id, "prompt": prompt_for(i.text), "text": i.text, "part": i.part}
        for i in picked
    ])  # fmt: skip


def _write_rows(target: Path, rows: list[dict[str, str]]) -> Path:
    write_atomic(target, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return target
