import json
from collections import Counter
from pathlib import Path

import pytest

from stillroom.errors import InputError
from stillroom.tasks import wordnet
from stillroom.tasks.wordnet import (
    CANDIDATES,
    DEFAULT_CLASSES,
    FEW_SHOT,
    FEW_SHOT_PREFIX,
    PROMPT_TEMPLATE,
    TASK_FILE,
    build_wordnet_task,
    clean_gloss,
    find_wordnet,
    parse_data_noun,
    prompt_for,
)

LICENSE = "  1 This software and database is being provided to you, the LICENSEE, by  \n  2   \n"
CLASSES = ["noun.animal", "noun.plant"]


def synset(
    offset: str, lex: int, words: list[str], gloss: str, pointers: tuple[str, ...] = ("@",)
) -> str:
    """One data.noun line in the real format (wndb(5)); w_cnt is hexadecimal."""
    lemmas = " ".join(f"{w} 0" for w in words)
    ptrs = " ".join(f"{sym} 00001740 n 0000" for sym in pointers)
    return (
        f"{offset} {lex:02d} n {len(words):02x} {lemmas} {len(pointers):03d} {ptrs} | {gloss}  \n"
    )


SHOT_OFFSET, _, SHOT_GLOSS = FEW_SHOT[0]  # an animal example of the prompt
LINES = [
    # usable animals: gloss with example sentences, one with 11 lemmas (w_cnt "0b")
    synset("02084071", 5, ["dog", "domestic_dog"], 'a member of the genus Canis; "the dog barked"'),
    synset("02121620", 5, [f"cat{i}" for i in range(11)], "feline mammal usually having thick fur"),
    synset("01503061", 5, ["bird"], 'warm-blooded egg-laying vertebrates; "birds fly"; "a bird"'),
    # usable plants
    synset("12992868", 20, ["fungus"], "an organism of the kingdom Fungi lacking chlorophyll"),
    synset("13104059", 20, ["tree"], "a tall perennial woody plant having a main trunk"),
    synset("12205694", 20, ["herb"], "a plant lacking a permanent woody stem; many are flowering"),
    # left out: a genus (member meronyms), a rank-named genus, an instance, too short,
    # too long, a definition shared by two classes, a person (class not asked for)
    synset("02083863", 5, ["Canis", "genus_Canis"], "type genus of the Canidae", ("@", "%m")),
    synset("02083999", 5, ["genus_Felis"], "type genus of the Felidae and its allies"),
    synset("09044862", 5, ["Lassie"], "a famous fictional collie dog of the films", ("@i",)),
    synset("02085000", 5, ["pup"], "young dog"),
    synset("02086000", 5, ["beast"], " ".join(["word"] * 31)),
    synset("02087000", 5, ["shared"], "a thing found in both the animal and plant files"),
    synset("12087000", 20, ["shared"], "a thing found in both the animal and plant files"),
    synset("10000000", 18, ["person"], "a human being of any age or sex"),
    # the prompt's own example (same offset): never an item
    synset(SHOT_OFFSET, 5, ["coati"], SHOT_GLOSS),
]
USABLE = {"n02084071", "n02121620", "n01503061", "n12992868", "n13104059", "n12205694"}


@pytest.fixture
def data_noun(tmp_path: Path) -> Path:
    path = tmp_path / "dict" / "data.noun"
    path.parent.mkdir()
    path.write_text(LICENSE + "".join(LINES), encoding="utf-8")
    return path


def rows_of(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_clean_gloss_keeps_definition_only() -> None:
    assert clean_gloss('a meal; a feast; "a banquet for the seniors"; "the feast"  ') == (
        "a meal; a feast"
    )
    assert clean_gloss('the letter "a" as a  symbol') == 'the letter "a" as a symbol'


def test_parse_reads_fields_and_flags(data_noun: Path) -> None:
    synsets = {s.offset: s for s in parse_data_noun(data_noun)}
    assert len(synsets) == len(LINES)  # license lines skipped
    dog, cats = synsets["02084071"], synsets["02121620"]
    assert (dog.lexname, dog.words, dog.id) == ("noun.animal", ("dog", "domestic_dog"), "n02084071")
    assert dog.definition == "a member of the genus Canis"
    assert len(cats.words) == 11 and cats.definition == "feline mammal usually having thick fur"
    assert synsets["02083863"].taxon and synsets["02083999"].taxon and not dog.taxon
    assert synsets["09044862"].instance and not dog.instance


def test_build_is_balanced_clean_and_leak_free(data_noun: Path, tmp_path: Path) -> None:
    path = build_wordnet_task(tmp_path / "out", classes=CLASSES, per_class=3, source=data_noun)
    assert path == tmp_path / "out" / TASK_FILE
    rows = rows_of(path)
    assert {r["id"] for r in rows} == USABLE  # every usable synset, nothing else
    assert Counter(r["label"] for r in rows) == {"animal": 3, "plant": 3}
    by_id = {r["id"]: r for r in rows}
    assert by_id["n02084071"] == {
        "id": "n02084071",
        "text": "a member of the genus Canis",
        "label": "animal",
        "lexname": "noun.animal",
        "headword": "dog",
    }
    assert not any('"' in r["text"] for r in rows)
    assert not {r["text"] for r in rows} & {gloss for _, _, gloss in FEW_SHOT}
    assert [p.name for p in path.parent.iterdir()] == [TASK_FILE]  # no temp file left


def test_a_few_shot_example_in_another_version_is_no_item(tmp_path: Path) -> None:
    # Another WordNet version may number the example's synset differently, or edit its gloss.
    path = tmp_path / "data.noun"
    renumbered = synset("02509999", 5, ["coati"], SHOT_GLOSS + '; "seen in Arizona"')
    edited = synset(SHOT_OFFSET, 5, ["coati"], "an omnivorous mammal of the Americas")
    path.write_text(LICENSE + "".join(LINES[:3]) + renumbered + edited)
    rows = rows_of(build_wordnet_task(tmp_path, classes=["noun.animal"], per_class=3, source=path))
    assert {r["id"] for r in rows} == {"n02084071", "n02121620", "n01503061"}


def test_build_is_deterministic_for_a_seed(data_noun: Path, tmp_path: Path) -> None:
    def build(name: str, seed: int) -> bytes:
        out = tmp_path / name
        path = build_wordnet_task(out, classes=CLASSES, per_class=2, seed=seed, source=data_noun)
        return path.read_bytes()

    assert build("a", 0) == build("b", 0)
    outputs = {build(f"s{seed}", seed) for seed in range(8)}
    assert len(outputs) > 1  # the seed chooses which items, and their order
    for seed in range(8):
        rows = rows_of(tmp_path / f"s{seed}" / TASK_FILE)
        assert Counter(r["label"] for r in rows) == {"animal": 2, "plant": 2}


def test_build_names_the_problem(data_noun: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"too few usable glosses.*noun.animal': 3"):
        build_wordnet_task(tmp_path, classes=CLASSES, per_class=4, source=data_noun)
    with pytest.raises(InputError, match="unknown WordNet noun classes"):
        build_wordnet_task(tmp_path, classes=["noun.dragon"], per_class=1, source=data_noun)
    with pytest.raises(InputError, match="per_class"):
        build_wordnet_task(tmp_path, classes=CLASSES, per_class=0, source=data_noun)


def test_a_failed_write_keeps_the_old_file(
    data_noun: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = build_wordnet_task(tmp_path, classes=CLASSES, per_class=2, source=data_noun)
    before = path.read_bytes()

    def broken(*args: object, **kwargs: object) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(wordnet.json, "dumps", broken)
    with pytest.raises(OSError, match="disk full"):
        build_wordnet_task(tmp_path, classes=CLASSES, per_class=3, source=data_noun)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dict", TASK_FILE]


def test_find_wordnet_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path))
    with pytest.raises(InputError, match="apt-get install wordnet-base"):
        find_wordnet()
    (tmp_path / "data.noun").write_text(LICENSE)
    assert find_wordnet() == tmp_path / "data.noun"


def test_prompt_has_examples_of_every_class_and_ends_at_the_label() -> None:
    assert Counter(c for _, c, _ in FEW_SHOT) == {c: 3 for c in DEFAULT_CLASSES}
    prompt = prompt_for("a small furry animal")
    assert prompt.startswith(FEW_SHOT_PREFIX)
    assert prompt.endswith("\n\nDefinition: a small furry animal\nCategory:")
    assert all(f"Definition: {gloss}\n" in FEW_SHOT_PREFIX for _, _, gloss in FEW_SHOT)
    assert len(set(CANDIDATES)) == len(DEFAULT_CLASSES)
    assert all(c.startswith(" ") and " " not in c[1:] for c in CANDIDATES)
    assert PROMPT_TEMPLATE.format_map({"text": "x {y}"}) == prompt_for("x {y}")


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="no wordnet-base")
def test_real_wordnet_gives_a_balanced_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    rows = rows_of(build_wordnet_task(tmp_path, per_class=300))
    assert len(rows) == 2400 and len({r["id"] for r in rows}) == 2400
    expected = {wordnet.VERBALIZERS[c]: 300 for c in DEFAULT_CLASSES}
    assert Counter(r["label"] for r in rows) == expected
    assert not {r["id"][1:] for r in rows} & {offset for offset, _, _ in FEW_SHOT}
    assert not {r["text"] for r in rows} & {gloss for _, _, gloss in FEW_SHOT}
    # the few-shot examples are real synsets of the classes they illustrate
    synsets = {s.offset: s for s in parse_data_noun(find_wordnet())}
    assert all(synsets[o].lexname == c and synsets[o].definition == g for o, c, g in FEW_SHOT)
