"""engine.cli.progress_bar: rates are counted from a stage's first update, and only once they mean something."""

from __future__ import annotations

import io

import pytest

from engine.cli import progress_bar
from engine.cli.progress_bar import ProgressBar


def test_rate_counts_from_the_first_update_not_the_stage_start(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress_bar.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.stage_started("backbone")
    clock[0] = 100.01
    bar.update(40, 100)  # a server reports 40 % at once: no rate from 0.01 s
    assert "-- tok/s" in out.getvalue() and "ETA -:--" in out.getvalue()
    clock[0] = 102.01
    bar.update(50, 100)  # 10 more in 2 s since the first update: 5/s, 50 left → 0:10
    last = out.getvalue().rsplit("\r", 1)[-1]
    assert "50/100 tok" in last and "5.0 tok/s" in last and "ETA 0:10" in last
