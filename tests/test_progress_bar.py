"""engine.cli.progress_bar: rates are counted from a stage's first update, and only once they mean
something; a terminal gets one redrawn line, a file or pipe a plain line per tenth."""

from __future__ import annotations

import io

import pytest

from engine.cli import progress_bar
from engine.cli.progress_bar import ProgressBar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rate_counts_from_the_first_update_not_the_stage_start(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress_bar.time, "monotonic", lambda: clock[0])
    out = _Terminal()
    bar = ProgressBar(out)
    bar.stage_started("backbone")
    clock[0] = 100.01
    bar.update(40, 100)  # a server reports 40 % at once: no rate from 0.01 s
    assert "-- tok/s" in out.getvalue() and "ETA -:--" in out.getvalue()
    clock[0] = 102.01
    bar.update(50, 100)  # 10 more in 2 s since the first update: 5/s, 50 left → 0:10
    last = out.getvalue().rsplit("\r", 1)[-1]
    assert last.startswith("  [") and "50/100 tok" in last and "5.0 tok/s" in last and "ETA 0:10" in last


def test_a_file_or_pipe_gets_a_line_per_tenth_and_no_carriage_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(progress_bar.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.stage_started("superres")
    for done in range(1, 1001):
        clock[0] += 0.5
        bar.update(done, 1000)
    bar.log("done")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "» superres" and lines[-1] == "  done"
    assert [line.split()[1] for line in lines[1:-1]] == [f"{n}/1000" for n in (1, *range(100, 1001, 100))]


def test_the_download_bar_writes_plain_lines_into_a_file() -> None:
    from engine.events import DOWNLOAD, VERIFY, DownloadProgress
    from engine.weights.cli import DownloadBar

    out = io.StringIO()
    bar = DownloadBar(out)
    for phase in (DOWNLOAD, VERIFY):
        for done in range(0, 10_001, 50):
            bar(DownloadProgress("khala_backbone.safetensors", done, 10_000, done, 10_000, 1e6, 1.0, phase))
    bar.end()
    text = out.getvalue()
    assert "\r" not in text and "\033" not in text
    lines = text.splitlines()
    assert len(lines) == 22 and sum("verifying" in line for line in lines) == 11  # 0, 10 %, … 100 % per phase
    terminal = _Terminal()
    DownloadBar(terminal)(DownloadProgress("a", 1, 2, 1, 2, 1.0, 1.0))
    assert terminal.getvalue().startswith("\r  [") and terminal.getvalue().endswith("\033[K")
