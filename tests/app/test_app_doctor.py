"""Settings → Check This Mac…: the doctor's probe on the worker with progress, cancel, the verdict and
Save Report…; the quick check for after the first download; the seatbelt in the app's entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.doctor_dialog import DoctorDialog, overall_fraction, run_quick_check
from engine.events import Stage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def window(qtbot, settings, tiny_weights, monkeypatch):
    from conftest import make_window

    monkeypatch.delenv("KHALA_DEVICE", raising=False)
    monkeypatch.delenv("KHALA_DTYPE", raising=False)
    w, _ = make_window(qtbot, settings, tiny_weights, lambda folder: None)
    return w


def test_settings_check_this_mac_shows_the_verdict_and_saves_the_report(qtbot, window, tiny_weights, tmp_path,
                                                                         monkeypatch):
    from app.settings_dialog import SettingsDialog

    settings_dialog = SettingsDialog(window.settings, window.weights_dir, window.set_weights_dir,
                                     lambda: window.busy, window)
    qtbot.addWidget(settings_dialog)
    settings_dialog.show()
    progress: list[int] = []
    with qtbot.waitSignal(settings_dialog.check_button.clicked):
        qtbot.mouseClick(settings_dialog.check_button, Qt.MouseButton.LeftButton)
    dialog = settings_dialog.findChild(DoctorDialog)
    assert dialog is not None and dialog.isVisible() and dialog.job is not None
    assert dialog.cancel_button.isVisible() and not dialog.save_button.isEnabled()
    dialog.job.event.connect(lambda _e: progress.append(dialog.bar.value()))
    with qtbot.waitSignal(dialog.report_ready, timeout=120_000) as got:
        pass
    report = got.args[0]
    qtbot.waitUntil(lambda: dialog.job is None, timeout=10_000)
    assert report.device == "cpu" and report.verdict in ("pass", "warn")
    assert dialog.verdict.isVisible() and dialog.verdict.text().startswith(report.verdict.upper())
    assert dialog.checks.topLevelItemCount() == len(report.checks) >= 7
    assert dialog.checks.topLevelItem(0).text(1) == report.checks[0].name
    assert progress == sorted(progress) and dialog.bar.value() == 1000  # progress only moves forward
    assert dialog.save_button.isEnabled() and not dialog.cancel_button.isVisible()

    target = tmp_path / "check.txt"
    monkeypatch.setattr("app.doctor_dialog.QFileDialog.getSaveFileName", lambda *a, **k: (str(target), ""))
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    text = target.read_text()
    assert text.startswith(f"Khala doctor: {report.verdict.upper()}") and "backbone parity" in text
    assert str(tiny_weights.parent) not in text and tiny_weights.name in text
    assert dialog.save(tmp_path / "missing" / "x.txt") is False and "Cannot write" in dialog.status.text()


def test_cancel_stops_the_check(qtbot, tiny_weights):
    dialog = DoctorDialog(tiny_weights)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.start()
    dialog.job.event.connect(lambda e: isinstance(e, Stage) and e.name == "backbone_reference" and dialog.cancel())
    qtbot.waitUntil(lambda: dialog.job is None, timeout=60_000)
    assert dialog.status.text() == "Check cancelled." and dialog.report is None
    assert not dialog.save_button.isEnabled() and dialog.again_button.isVisible()


def test_quick_check_after_the_first_download(qtbot, window, tiny_weights):
    dialog = run_quick_check(window, tiny_weights)
    assert dialog.isVisible() and not dialog.isModal() and dialog.quick and dialog.job is not None
    dialog.cancel()  # the quick probe itself: tests/test_doctor.py (--quick)
    qtbot.waitUntil(lambda: dialog.job is None, timeout=60_000)
    dialog.close()


def test_no_check_while_a_song_is_made_or_without_a_model(qtbot, tiny_weights):
    busy = DoctorDialog(tiny_weights, busy=lambda: True)
    none = DoctorDialog(None)
    for dialog in (busy, none):
        qtbot.addWidget(dialog)
        assert dialog.start() is False and dialog.job is None
    assert "song is being made" in busy.status.text() and "no model yet" in none.status.text()


def test_overall_progress_covers_the_stages():
    assert overall_fraction("machine") == 0 and overall_fraction("decoder_device", 1, 1) == 1
    assert overall_fraction("backbone_reference", 0, 32) < overall_fraction("backbone_reference", 16, 32) \
        < overall_fraction("backbone_device")


def test_the_app_sets_the_mps_fallback_before_torch_loads():
    spy = ("import os, sys\n"
           "seen = []\n"
           "set_item = type(os.environ).__setitem__\n"
           "def spy(self, key, value):\n"
           "    if key == 'PYTORCH_ENABLE_MPS_FALLBACK':\n"
           "        seen.append(('torch' in sys.modules, value))\n"
           "    set_item(self, key, value)\n"
           "type(os.environ).__setitem__ = spy\n"
           "import app.main\n"
           "print(seen, os.environ.get('PYTORCH_ENABLE_MPS_FALLBACK'))\n")

    def run(user_value: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "PYTORCH_ENABLE_MPS_FALLBACK"}
        if user_value is not None:
            env["PYTORCH_ENABLE_MPS_FALLBACK"] = user_value
        out = subprocess.run([sys.executable, "-c", spy], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip()

    assert run(None) == "[(False, '1')] 1"
    assert run("0") == "[] 0"  # the user's own value is kept
