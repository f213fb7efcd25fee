"""Progress stays visible off a terminal (log files, CI), where rich draws nothing live."""

from __future__ import annotations

import pytest

from stillroom.harvest.progress import HarvestProgress


def test_harvest_progress_prints_plain_lines_off_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with HarvestProgress(3) as progress:
        for _ in range(3):
            progress.advance(tokens=5, spent_usd=0.25)
    err = capsys.readouterr().err
    assert "harvest 3/3" in err  # the last line always comes, whatever the interval
    assert "$0.2500" in err


def test_disabled_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with HarvestProgress(2, enabled=False) as progress:
        progress.advance(tokens=1, spent_usd=0.0)
        progress.advance(tokens=1, spent_usd=0.0)
    assert "harvest" not in capsys.readouterr().err
