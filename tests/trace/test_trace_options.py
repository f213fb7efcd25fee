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
