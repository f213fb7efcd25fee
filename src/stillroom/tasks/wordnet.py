"""WordNet noun glosses, labelled by lexicographer category: a real-text classification task.

Source: WordNet 3.0's `data.noun`, shipped by the Debian package `wordnet-base` (never a
model hub). Each line of that file is one synset (wndb(5)):

    synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt
        [ptr_symbol offset pos source/target ...] | gloss

`lex_filenum` names the lexicographer file the synset was written in (lexnames(5):
05 = noun.animal, 20 = noun.plant, ...); that is the gold label, given by WordNet's
lexicographers, not by us or by a model.

What an item is, and why:

- **text** is the gloss's definition only. The example sentences that follow it in quotes
  are dropped: they use the headword in context ("a banquet for the graduating seniors"),
  which is a different task and doubles the length. The headword is left out too, so the
  task is reading a definition, not recalling what a (often rare) word means; it is kept
  in the row's `headword` field for inspection.
- Left out: instances (proper nouns such as "Mark Twain" or "Paris", whose glosses are
  formulaic: "United States writer (1835-1910)"); taxonomic groups (genera, families:
  "type genus of the Passeridae" names no animal a reader could recognise); glosses
  shorter than 3 or longer than 30 words; and any definition text that occurs more than
  once (a text shared by two categories has no single gold label).
- The few-shot examples in `FEW_SHOT_PREFIX` are real glosses too; their synsets (and any
  synset with the same text) are excluded from every dataset, so nothing the teacher was
  shown is scored.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stillroom.errors import InputError
from stillroom.reportkit.files import write_atomic

# Where Debian's wordnet-base puts the database; $WNSEARCHDIR is WordNet's own override.
DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
TASK_FILE = "wordnet-nouns.jsonl"

# lexnames(5): lexicographer file number -> name, nouns only (03 noun.Tops is the root).
NOUN_LEXNAMES: dict[int, str] = {
    3: "noun.Tops", 4: "noun.act", 5: "noun.animal", 6: "noun.artifact",
    7: "noun.attribute", 8: "noun.body", 9: "noun.cognition", 10: "noun.communication",
    11: "noun.event", 12: "noun.feeling", 13: "noun.food", 14: "noun.group",
    15: "noun.location", 16: "noun.motive", 17: "noun.object", 18: "noun.person",
    19: "noun.phenomenon", 20: "noun.plant", 21: "noun.possession", 22: "noun.process",
    23: "noun.quantity", 24: "noun.relation", 25: "noun.shape", 26: "noun.state",
    27: "noun.substance", 28: "noun.time",
}  # fmt: skip

# The label word for each category: one common English word, a single Gemma token after a
# space, and no two sharing a first token (scoring reads the first token's log-prob).
VERBALIZERS: dict[str, str] = {
    "noun.act": "action", "noun.animal": "animal", "noun.artifact": "artifact",
    "noun.attribute": "quality", "noun.body": "body", "noun.cognition": "idea",
    "noun.communication": "message", "noun.event": "event", "noun.feeling": "feeling",
    "noun.food": "food", "noun.group": "group", "noun.location": "place",
    "noun.motive": "motive", "noun.object": "object", "noun.person": "person",
    "noun.phenomenon": "phenomenon", "noun.plant": "plant", "noun.possession": "property",
    "noun.process": "process", "noun.quantity": "unit", "noun.relation": "relation",
    "noun.shape": "shape", "noun.state": "state", "noun.substance": "substance",
    "noun.time": "time",
}  # fmt: skip

# Eight categories a reader can tell apart from a definition alone. noun.artifact is left
# out on purpose: WordNet files buildings, drugs and fabrics there, which a reader (and the
# teacher: 45-65% on it) takes for places and substances, so its gold label is unfair.
DEFAULT_CLASSES: list[str] = [
    "noun.animal",
    "noun.plant",
    "noun.food",
    "noun.person",
    "noun.body",
    "noun.location",
    "noun.substance",
    "noun.quantity",
]

MIN_WORDS, MAX_WORDS = 3, 30
# Taxonomic groups carry member meronyms ("%m": a genus has its species as members) or are
# named by their rank ("genus_Crocus"). "%m" also marks a few collectives outside biology
# ("supernatural forces and events and beings collectively"), which are no better items.
_TAXON_LEMMA = re.compile(
    r"^(?:sub|super|infra)?(?:genus|family|order|class|phylum|division|tribe)_", re.I
)


@dataclass(frozen=True)
class Synset:
    """One noun synset of data.noun, with its gloss already cleaned to the definition."""

    offset: str  # 8 digits, unique within data.noun
    lexname: str  # "noun.animal"
    words: tuple[str, ...]  # lemmas, underscores for spaces
    definition: str
    instance: bool  # an instance of its hypernym ("@i"): a proper noun
    taxon: bool  # a taxonomic group (genus, family, ...) or other collective

    @property
    def id(self) -> str:
        """WordNet's usual synset id: part of speech + offset ("n02084071")."""
        return f"n{self.offset}"


def find_wordnet() -> Path:
    """The path of WordNet's data.noun: $WNSEARCHDIR, else Debian's /usr/share/wordnet."""
    base = Path(os.environ.get("WNSEARCHDIR") or DEBIAN_WORDNET_DIR)
    path = base / "data.noun"
    if not path.is_file():
        raise InputError(
            f"WordNet's noun database is not at {path}; install it with "
            "`apt-get install wordnet-base` (Debian/Ubuntu), or set WNSEARCHDIR to a folder "
            "holding WordNet 3.0's data.noun"
        )
    return path


def clean_gloss(gloss: str) -> str:
    """The definition part of a gloss: example sentences (quoted, after ';') dropped.

    'a meal that is well prepared; "a banquet for the seniors"' -> 'a meal that is well
    prepared'. Whitespace is collapsed; quotes inside a definition are kept.
    """
    parts = [p.strip() for p in gloss.split(";")]
    kept: list[str] = []
    for part in parts:
        if part.startswith('"'):  # the examples come last; nothing after them is definition
            break
        if part:
            kept.append(part)
    return re.sub(r"\s+", " ", "; ".join(kept)).strip()


def parse_data_noun(path: Path) -> Iterator[Synset]:
    """Every synset in a WordNet data.noun file, in file order (the license header skipped)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("  ") or not line.strip():  # license lines start with 2 spaces
                continue
            try:
                yield _parse_line(line)
            except (ValueError, IndexError, KeyError) as e:
                raise InputError(
                    f"{path}:{number}: not a WordNet data.noun line ({e}); point "
                    "WNSEARCHDIR at an unmodified WordNet 3.0 database"
                ) from None


def _parse_line(line: str) -> Synset:
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    w_cnt = int(fields[3], 16)  # the word count is hexadecimal
    words = tuple(fields[4 : 4 + 2 * w_cnt : 2])
    p_at = 4 + 2 * w_cnt
    pointers = fields[p_at + 1 : p_at + 1 + 4 * int(fields[p_at]) : 4]  # each symbol
    return Synset(
        offset=fields[0],
        lexname=NOUN_LEXNAMES[int(fields[1])],
        words=words,
        definition=clean_gloss(gloss),
        instance="@i" in pointers,
        taxon="%m" in pointers or any(_TAXON_LEMMA.match(w) for w in words),
    )


def eligible_synsets(path: Path, classes: list[str]) -> dict[str, list[Synset]]:
    """The synsets of each class that may become items, in file order (see module doc)."""
    synsets = list(parse_data_noun(path))
    # Definitions seen more than once anywhere in the file are ambiguous or duplicated.
    seen: dict[str, int] = defaultdict(int)
    for s in synsets:
        seen[s.definition] += 1
    # The prompt's examples, by offset and by text (another WordNet version may renumber a
    # synset or edit its gloss): the teacher must never be scored on what it was shown.
    shot_offsets = {offset for offset, _, _ in FEW_SHOT}
    shot_texts = {gloss for _, _, gloss in FEW_SHOT}
    pool: dict[str, list[Synset]] = {c: [] for c in classes}
    for s in synsets:
        if s.lexname not in pool or s.instance or s.taxon or seen[s.definition] > 1:
            continue
        if s.offset in shot_offsets or s.definition in shot_texts:
            continue
        if MIN_WORDS <= len(s.definition.split()) <= MAX_WORDS:
            pool[s.lexname].append(s)
    return pool


# ---- the teacher's prompt ---------------------------------------------------------------

# (synset offset, class, definition): real WordNet 3.0 glosses, excluded from every dataset.
# Round i holds the i-th example of each class, so the first 8 * k entries are k per class.
# Three per class scored best (calibrated accuracy on 320 train items: 1 shot 86%, 2: 88%,
# 3: 90%, 4: 89% and slower) and keep a prompt (~450 tokens) inside Gemma 3's 512-token
# sliding attention window. Picked by hand to cover each class's kinds (mammal, bird, fish;
# herb, tree, fungus; ...) and WordNet conventions a reader might not guess: fungi are
# plants, meat is food, numbers are quantities.
FEW_SHOT: list[tuple[str, str, str]] = [
    ("02509515", "noun.animal", "omnivorous mammal of Central America and South America"),
    ("12540800", "noun.plant", "climbing garden plant having fragrant pastel-colored flowers"),
    ("07840520", "noun.food", "a savory sauce of vinegar and soy sauce and spices"),
    ("10725280", "noun.person", "a person who translates written messages from one language to "
                                "another"),
    ("05418717", "noun.body", "a blood vessel that carries blood from the capillaries toward the "
                              "heart"),
    ("08521623", "noun.location", "a tract of land used for burials"),
    ("14694910", "noun.substance", "a rare soft orange mineral consisting of arsenic sulphide; an "
                                   "important ore of arsenic"),
    ("13649791", "noun.quantity", "a unit of length equal to one twelfth of a foot"),
    # round 2
    ("01830915", "noun.animal", "tropical American bird resembling a blue jay and having greenish "
                                "and bluish plumage"),
    ("12261359", "noun.plant", "large European beech with minutely-toothed leaves; widely planted "
                               "as an ornamental in North America"),
    ("07659793", "noun.food", "the tender meat of the loin muscle on each side of the vertebral "
                              "column"),
    ("09691279", "noun.person", "a native or inhabitant of Australia"),
    ("05405751", "noun.body", "salty fluid secreted by sweat glands"),
    ("08540770", "noun.location", "a small administrative division of a country"),
    ("14704966", "noun.substance", "an adhesive made from water and flour or starch; used on paper "
                                   "and paperboard"),
    ("13685809", "noun.quantity", "the basic unit of money in Bulgaria"),
    # round 3
    ("02663211", "noun.animal", "a large brownish European flatfish"),
    ("13054073", "noun.plant", "fungus used in the preparation of punk for fuses"),
    ("07892512", "noun.food", "wine having a red color derived from skins of dark-colored grapes"),
    ("09929298", "noun.person", "someone who climbs as a sport; especially someone who climbs "
                                "mountains"),
    ("05314549", "noun.body", "the outer corner of the eye"),
    ("08614357", "noun.location", "a relatively narrow strip of land projecting from some larger "
                                  "area"),
    ("14962387", "noun.substance", "a silver-white alloy containing copper and zinc and nickel"),
    ("13751404", "noun.quantity", "the cardinal number that is the fifth power of ten"),
]  # fmt: skip


def few_shot_prefix(examples: list[tuple[str, str, str]]) -> str:
    """The prompt's shared head: each example as a finished item, a blank line apart."""
    return "".join(f"{format_item(gloss)} {VERBALIZERS[c]}\n\n" for _, c, gloss in examples)


def format_item(text: str) -> str:
    """One item as the teacher reads it, ending where the label word comes next."""
    return f"Definition: {text}\nCategory:"


FEW_SHOT_PREFIX = few_shot_prefix(FEW_SHOT)
# Score these continuations, in DEFAULT_CLASSES order; the leading space is the model's own.
CANDIDATES: list[str] = [f" {VERBALIZERS[c]}" for c in DEFAULT_CLASSES]
LABELS: list[str] = [VERBALIZERS[c] for c in DEFAULT_CLASSES]


# The same prompt as a harvest config's `prompts.template` (filled by str.format_map).
PROMPT_TEMPLATE = FEW_SHOT_PREFIX.replace("{", "{{").replace("}", "}}") + format_item("{text}")


def prompt_for(text: str) -> str:
    """The teacher's prompt for one item: the few-shot prefix, then the item.

    Written for DEFAULT_CLASSES; a dataset of other classes needs its own examples.
    """
    return FEW_SHOT_PREFIX + format_item(text)


# ---- the dataset ------------------------------------------------------------------------


def build_wordnet_task(
    out_dir: Path,
    *,
    classes: list[str] = DEFAULT_CLASSES,
    per_class: int,
    seed: int = 0,
    source: Path | None = None,
    with_prompts: bool = False,
) -> Path:
    """Write `per_class` items of each class to out_dir/wordnet-nouns.jsonl; return its path.

    Rows: {"id": "n02084071", "text": definition, "label": "animal", "lexname":
    "noun.animal", "headword": "dog"}, shuffled (so a prefix of the file stays about
    balanced). The same source, classes, per_class and seed give the same file byte for
    byte. `source` is a data.noun file (default: `find_wordnet()`); `with_prompts` adds each
    row's `prompt`, the teacher's few-shot prompt for it. The file is written to
    a temporary name and renamed, so a crash never leaves half a dataset under the name.
    """
    unknown = [c for c in classes if c not in VERBALIZERS]
    if unknown or not classes:
        raise InputError(
            f"unknown WordNet noun classes {unknown}; choose from {sorted(VERBALIZERS)}"
        )
    if len(set(classes)) != len(classes):
        raise InputError(f"classes {classes} repeat a class; list each class once")
    if per_class < 1:
        raise InputError(f"per_class is {per_class}; give 1 or more items per class")
    path = source or find_wordnet()
    pool = eligible_synsets(path, classes)
    short = {c: len(pool[c]) for c in classes if len(pool[c]) < per_class}
    if short:
        raise InputError(
            f"{path}: too few usable glosses for per_class={per_class}: {short}; "
            "lower per_class or choose other classes"
        )
    rng = random.Random(seed)
    chosen = [s for c in classes for s in rng.sample(pool[c], per_class)]
    rng.shuffle(chosen)
    rows = [
        {
            "id": s.id,
            "text": s.definition,
            "label": VERBALIZERS[s.lexname],
            "lexname": s.lexname,
            "headword": s.words[0].replace("_", " "),
        }
        for s in chosen
    ]
    if with_prompts:
        rows = [r | {"prompt": prompt_for(r["text"])} for r in rows]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / TASK_FILE
    write_atomic(target, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return target
