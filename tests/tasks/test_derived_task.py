import json
from pathlib import Path

import pytest

from stillroom.cli import main
from stillroom.errors import InputError
from stillroom.tasks.derived import (
    FEW_SHOT,
    FEW_SHOT_PREFIX,
    TASK_FILE,
    TRANSFER_FILE,
    build_derived_task,
    copy_answers,
    eligible_items,
    most_common_answer,
    prompt_for,
    read_synsets,
    reference_definition,
    transfer_items,
)

LICENSE = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
SHOT_ID, SHOT_WORD, _, SHOT_DEFINITION = FEW_SHOT[0]  # an adverb of the prompt


def data_line(
    offset: str, ss_type: str, words: list[str], gloss: str, pointers: tuple[str, ...] = ()
) -> str:
    """One data.* line in the real format (wndb(5)): w_cnt hexadecimal, pointers as
    'symbol offset pos source/target'."""
    lemmas = " ".join(f"{w} 0" for w in words)
    return (
        f"{offset} 00 {ss_type} {len(words):02x} {lemmas} {len(pointers):03d} "
        f"{' '.join(pointers)} | {gloss}  \n"
    )


def index_line(lemma: str, pos: str, offsets: list[str]) -> str:
    """One index.* line: lemma pos synset_cnt p_cnt [symbols] sense_cnt tagsense_cnt offsets."""
    return f"{lemma} {pos} {len(offsets)} 1 @ {len(offsets)} 0 {' '.join(offsets)}  \n"


ADJ = [
    data_line("00000100", "a", ["magical"], "possessing magic powers"),
    data_line("00000200", "s", ["strange", "unusual"], "being definitely out of the ordinary"),
    data_line("00000300", "a", ["tidy"], "marked by good order and cleanliness"),
    data_line("00000400", "a", ["neat"], "clean or orderly"),
]
ADV = [
    # usable: a pertainym from word 1 to the adjective's word 1, its stem in the definition
    data_line("00000001", "r", ["magically"], 'in a magical manner; "she sang magically"',
              ("\\ 00000100 a 0101",)),
    # left out: the pointer leaves from word 2, not from the lemma indexed ("oddly")
    data_line("00000002", "r", ["oddly", "strangely"], "in a strange or odd way",
              ("\\ 00000200 a 0201",)),
    # left out: the word it points to does not occur in the definition
    data_line("00000003", "r", ["neatly"], "with orderly arrangement and care",
              ("\\ 00000300 a 0101",)),
    # left out: a prompt example, under another offset (another WordNet version)
    data_line("00000004", "r", [SHOT_WORD], SHOT_DEFINITION + " (of behaviour)",
              ("\\ 00000200 a 0101",)),
]  # fmt: skip
NOUN = [
    # usable: a derivational pointer to a shorter word; parentheses dropped
    data_line("00000010", "n", ["neatness"], "the state of being neat (in a room)",
              ("+ 00000400 a 0101",)),
    # left out: two synonyms sharing one definition (no single reference)
    data_line("00000011", "n", ["magicalness"], "the quality of being magical",
              ("+ 00000100 a 0101",)),
    data_line("00000012", "n", ["magicality"], "the quality of being magical",
              ("+ 00000100 a 0101",)),
    # left out: the first sense has no pointer (the usable second sense is not the word's
    # usual meaning)
    data_line("00000013", "n", ["strangeness"], "unfamiliarity by virtue of not being known"),
    data_line("00000014", "n", ["strangeness"], "the quality of being strange",
              ("+ 00000200 a 0101",)),
    # left out: capitals (a name), and a definition of two words
    data_line("00000015", "n", ["Magicland"], "a park full of magical rides",
              ("+ 00000100 a 0101",)),
    data_line("00000016", "n", ["tidying"], "making tidy", ("+ 00000300 a 0101",)),
]  # fmt: skip
INDEX = {
    "adj": [index_line("magical", "a", ["00000100"]), index_line("strange", "a", ["00000200"]),
            index_line("tidy", "a", ["00000300"]), index_line("neat", "a", ["00000400"])],
    "adv": [index_line("magically", "r", ["00000001"]), index_line("oddly", "r", ["00000002"]),
            index_line("neatly", "r", ["00000003"]), index_line(SHOT_WORD, "r", ["00000004"])],
    "noun": [index_line("neatness", "n", ["00000010"]),
             index_line("magicalness", "n", ["00000011"]),
             index_line("magicality", "n", ["00000012"]),
             index_line("strangeness", "n", ["00000013", "00000014"]),
             index_line("Magicland", "n", ["00000015"]), index_line("tidying", "n", ["00000016"])],
    "verb": [],
}  # fmt: skip
USABLE = {"r00000001": "magically", "n00000010": "neatness"}


@pytest.fixture
def wordnet_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "dict"
    folder.mkdir()
    for pos, lines in {"adj": ADJ, "adv": ADV, "noun": NOUN, "verb": []}.items():
        (folder / f"data.{pos}").write_text(LICENSE + "".join(lines), encoding="utf-8")
        (folder / f"index.{pos}").write_text(LICENSE + "".join(INDEX[pos]), encoding="utf-8")
    return folder


def rows_of(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_reference_definition_is_the_first_clause_without_asides() -> None:
    assert reference_definition('a large stream (larger than a creek); "the river"') == (
        "a large stream"
    )
    assert reference_definition("in an odd way; with surprise") == "in an odd way"


def test_read_synsets_reads_words_and_pointers(wordnet_dir: Path) -> None:
    synsets = read_synsets(wordnet_dir / "data.adv")
    assert synsets["00000002"].words == ("oddly", "strangely")
    assert synsets["00000001"].pointers == (("\\", "00000100", "a", "0101"),)
    bad = wordnet_dir / "data.bad"
    bad.write_text(LICENSE + "00000001 00 r zz oddly 0 | broken\n")
    with pytest.raises(InputError, match=r"data.bad:2: not a WordNet data line"):
        read_synsets(bad)


def test_only_transparent_first_senses_are_items(wordnet_dir: Path) -> None:
    items = {i.id: i for i in eligible_items(wordnet_dir)}
    assert {k: i.word for k, i in items.items()} == USABLE
    magically, neatness = items["r00000001"], items["n00000010"]
    assert (magically.part, magically.base, magically.definition) == (
        "adverb",
        "magical",
        "in a magical manner",
    )
    assert magically.text == "in a magical manner (adverb)"
    assert neatness.definition == "the state of being neat"


def test_build_writes_prompts_and_references(wordnet_dir: Path, tmp_path: Path) -> None:
    path = build_derived_task(tmp_path / "out", items=2, source=wordnet_dir)
    assert path == tmp_path / "out" / TASK_FILE
    rows = {r["id"]: r for r in rows_of(path)}
    assert {k: r["word"] for k, r in rows.items()} == USABLE
    row = rows["r00000001"]
    assert row["prompt"] == prompt_for("in a magical manner (adverb)")
    assert row["prompt"].endswith("\n\nDefinition: in a magical manner (adverb)\nWord:")
    assert (row["text"], row["part"], row["base"]) == (
        "in a magical manner (adverb)",
        "adverb",
        "magical",
    )
    assert [p.name for p in path.parent.iterdir()] == [TASK_FILE]  # no temp file left


def test_build_is_deterministic_for_a_seed(wordnet_dir: Path, tmp_path: Path) -> None:
    def build(name: str, seed: int) -> bytes:
        return build_derived_task(
            tmp_path / name, items=2, seed=seed, source=wordnet_dir
        ).read_bytes()

    assert build("a", 0) == build("b", 0)
    assert len({build(f"s{seed}", seed) for seed in range(8)}) > 1  # the order follows the seed


def test_build_names_the_problem(wordnet_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="only 2 usable items for items=3"):
        build_derived_task(tmp_path, items=3, source=wordnet_dir)
    with pytest.raises(InputError, match="items is 0"):
        build_derived_task(tmp_path, items=0, source=wordnet_dir)
    (wordnet_dir / "index.verb").unlink()
    with pytest.raises(InputError, match="lacks index.verb.*apt-get install wordnet-base"):
        build_derived_task(tmp_path, items=1, source=wordnet_dir)


def test_transfer_prompts_are_other_derived_senses(wordnet_dir: Path, tmp_path: Path) -> None:
    """The transfer set: senses like the items first, then other linked words' first senses;
    never an item's word or definition, a prompt example, or a definition twice."""
    alike, linked = transfer_items(wordnet_dir, eligible_items(wordnet_dir))
    # magicality shares magicalness's definition; strangeness's second sense is like an
    # item; neatly's definition lacks tidy's stem, so it is only linked
    assert [(i.word, i.definition) for i in alike] == [
        ("magicalness", "the quality of being magical"),
        ("strangeness", "the quality of being strange"),
    ]
    assert [(i.word, i.base) for i in linked] == [("neatly", "tidy")]
    build_derived_task(tmp_path, items=2, source=wordnet_dir, transfer=2)
    rows = rows_of(tmp_path / TRANSFER_FILE)
    assert sorted(r["text"] for r in rows) == sorted(i.text for i in alike)
    assert all(set(r) == {"id", "prompt", "text", "part"} for r in rows)  # no reference
    assert rows[0]["prompt"] == prompt_for(rows[0]["text"])
    build_derived_task(tmp_path, items=2, source=wordnet_dir, transfer=3)
    assert len(rows_of(tmp_path / TRANSFER_FILE)) == 3
    with pytest.raises(InputError, match="only 3 transfer prompts for transfer=4"):
        build_derived_task(tmp_path, items=2, source=wordnet_dir, transfer=4)


def test_trivial_answers() -> None:
    rows = [{"text": "in a magical manner (adverb)"}, {"text": "the state of being tidy (noun)"}]
    assert copy_answers(rows) == [r["text"] for r in rows]
    assert most_common_answer(["tidiness", "oddly", "oddly", "tidiness", "neatly"]) == "tidiness"


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.adv").is_file(), reason="no wordnet-base")
def test_real_wordnet_items_and_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    rows = rows_of(build_derived_task(tmp_path, items=400))
    assert len({r["id"] for r in rows}) == 400 and len({r["definition"] for r in rows}) == 400
    assert {r["part"] for r in rows} == {"noun", "verb", "adjective", "adverb"}
    assert all(r["word"].isalpha() and r["word"].islower() for r in rows)
    assert all(r["base"][: max(4, len(r["base"]) - 2)] in r["definition"] for r in rows)
    assert not {r["id"] for r in rows} & {i for i, _, _, _ in FEW_SHOT}
    # the prompt's examples are real senses: their synset holds the word and the definition
    files = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
    for item_id, word, _, definition in FEW_SHOT:
        synset = read_synsets(Path(f"/usr/share/wordnet/data.{files[item_id[0]]}"))[item_id[1:]]
        assert word in synset.words and reference_definition(synset.gloss) == definition
    assert all(f"Word: {w}\n" in FEW_SHOT_PREFIX for _, w, _, _ in FEW_SHOT)


def test_the_task_command_builds_it(
    wordnet_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WNSEARCHDIR", str(wordnet_dir))
    out = tmp_path / "data"
    with pytest.raises(SystemExit) as done:
        main(["task", "wordnet-derived", "--out", str(out), "--items", "2", "--seed", "3",
              "--transfer", "0"])  # fmt: skip
    assert done.value.code in (0, None)
    assert json.loads(capsys.readouterr().out) == {"path": str(out / TASK_FILE), "items": 2}
    assert (out / TASK_FILE).read_bytes() == (
        build_derived_task(tmp_path / "lib", items=2, seed=3, source=wordnet_dir).read_bytes()
    )
    main_args = ["task", "wordnet-derived", "--out", str(out), "--items", "2"]
    with pytest.raises(SystemExit):
        main([*main_args, "--transfer", "3"])
    assert json.loads(capsys.readouterr().out)["transfer"] == {
        "path": str(out / TRANSFER_FILE),
        "prompts": 3,
    }
    with pytest.raises(SystemExit) as done:
        main(["task", "wordnet-defs", "--out", str(out)])
    assert done.value.code == 2
    assert "the built-in tasks are: wordnet, wordnet-derived" in capsys.readouterr().err
