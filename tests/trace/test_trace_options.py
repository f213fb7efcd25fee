"""A trace's options: the shipped question set, and problems found before any model loads."""

from __future__ import annotations

import pytest

from stillroom.options import OptionsError
from stillroom.trace.options import DEFAULT_QUESTIONS, TraceOptions
from stillroom.trace.steps import prompts_to_ask


def test_the_default_questions_ship_with_the_package_and_are_varied() -> None:
    options = TraceOptions.parse(suspect="some/folder", key_file="k.json")
    assert options.prompts == DEFAULT_QUESTIONS and DEFAULT_QUESTIONS.is_file()
    said: list[str] = []
    asked = prompts_to_ask(options, said.append)
    assert len(asked) >= 300 and len(set(asked)) == len(asked) and not said
    openings = {q.split()[0] for q in asked}
    assert len(openings) >= 15  # explain, compare, write, plan, what, how, ...


def test_temperature_is_checked_with_the_other_options() -> None:
    with pytest.raises(OptionsError, match="temperature"):
        TraceOptions.parse(suspect="m", key_file="k.json", temperature=0)


def test_mass_mode_through_an_api_reads_texts_or_asks_prompts() -> None:
    url = "http://127.0.0.1:9/v1"
    asks = TraceOptions.parse(suspect=url, key_file="k.json", mode="mass", model="m")
    assert asks.asks  # no texts: the API's top-k on its own answers to the prompts
    reads = TraceOptions.parse(
        suspect=url, key_file="k.json", mode="mass", model="m", texts="plain.jsonl"
    )
    assert not reads.asks  # texts: echo on each
    with pytest.raises(OptionsError, match="texts"):
        TraceOptions.parse(suspect="some/folder", key_file="k.json", mode="mass")
    with pytest.raises(OptionsError, match="weights"):
        TraceOptions.parse(suspect=url, key_file="k.json", mode="read", texts="t.jsonl")
    with pytest.raises(OptionsError, match="top_logprobs"):
        TraceOptions.parse(suspect=url, key_file="k.json", mode="mass", top_logprobs=21)


def test_served_likelihood_is_allowed_through_an_api() -> None:
    o = TraceOptions.parse(
        suspect="http://127.0.0.1:9/v1", served="g.sqlite", accounts=["a"], model="m",
        served_by="likelihood",
    )  # fmt: skip
    assert o.scoring.value == "likelihood"
