"""SIGTERM is a cancel for the app too (issue 16): the running song stops, nothing of it is kept,
and the app quits without a question."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_sigterm_cancels_the_song_and_quits_without_asking(qtbot, fake_window, monkeypatch):
    from PySide6.QtWidgets import QApplication

    from app.main import quit_on_sigterm
    from conftest import fill_compose

    w = fake_window
    asked, quit_calls = [], []
    w.ask = lambda title, text: asked.append(title) or True
    monkeypatch.setattr(QApplication, "quit", lambda *_: quit_calls.append(1))
    w.factory.step_s = 0.05
    fill_compose(w)
    previous = signal.getsignal(signal.SIGTERM)
    tick = quit_on_sigterm(w)
    try:
        w.generate()
        qtbot.waitUntil(lambda: "Writing the song" in w.status.text(), timeout=10_000)
        os.kill(os.getpid(), signal.SIGTERM)
        qtbot.waitUntil(lambda: bool(quit_calls), timeout=10_000)
    finally:
        signal.signal(signal.SIGTERM, previous)
        tick.stop()
    assert w.job is None and asked == [] and w.quitting
    assert w.library.songs() == [] and list(w.settings.songs_dir.glob("*")) == []


def test_the_app_process_exits_cleanly_on_sigterm(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "KHALA_APP_DATA": str(tmp_path / "data"),
           "KHALA_WEIGHTS": str(tmp_path / "no-weights"), "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # the window and the first-launch dialog are up
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0 and "Traceback" not in err
