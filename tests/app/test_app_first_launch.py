"""First launch against the loopback fake Hub: sizes shown, download, cancel, resume, ready."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from huggingface_hub import constants
from PySide6.QtCore import Qt

from hub_server import FakeHub, make_weight_files

REPO = "Vinpolar/Khala-MusicGeneration-v1.0-MPS"
FILES = make_weight_files()


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    with FakeHub(REPO, FILES) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("KHALA_WEIGHTS", str(tmp_path / "weights"))
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield server


def test_download_cancel_resume_then_ready(qtbot, hub, settings, tmp_path, monkeypatch, no_quick_check):
    import engine.weights.download as download
    from conftest import make_window

    monkeypatch.setattr(download, "PROGRESS_EVERY_S", 0.0)
    real = download.download_events

    def slow(folder, **kw):  # a slow network, so Cancel lands mid-file
        from engine.events import Outcome

        inner = Outcome(real(folder, **kw))
        for event in inner:
            time.sleep(0.01)
            yield event
        return inner.result

    monkeypatch.setattr(download, "download_events", slow)
    w, _ = make_window(qtbot, settings, None, lambda folder: None)
    w.open_first_launch()
    d = w.first_launch
    assert d.isVisible() and not d.isModal()
    assert "The download is" in d.info.text() and "GB" in d.info.text() and "Free space" in d.info.text()
    assert str(tmp_path / "weights") in d.info.text()

    qtbot.mouseClick(d.download, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: " of " in d.status.text(), timeout=10_000)
    assert w.list.isEnabled() and w.player_bar.isEnabled()  # the app stays usable meanwhile
    qtbot.mouseClick(d.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: d.job is None, timeout=10_000)
    assert d.download.text() == "Resume" and "paused" in d.status.text()
    assert w.weights_dir is None

    with qtbot.waitSignal(d.weights_ready, timeout=30_000):
        qtbot.mouseClick(d.download, Qt.MouseButton.LeftButton)
    assert w.weights_dir == tmp_path / "weights" and settings.weights_dir == tmp_path / "weights"
    assert [args[1] for args in no_quick_check] == [tmp_path / "weights"]  # the doctor's quick check, once
    assert not d.isVisible() and "ready" in w.status.text()


def test_use_existing_folder_checks_it_on_a_worker(qtbot, hub, settings, tmp_path, tiny_weights, monkeypatch):
    import threading

    import engine.weights.preflight as preflight
    from conftest import make_window
    from hostile_files import DECODER_CONFIG, damaged_copy, yaml_bomb

    gate, checked = threading.Event(), threading.Event()
    real = preflight.check_model_files

    def held_check(folder):
        gate.wait(5)
        try:
            real(folder)
        finally:
            checked.set()

    monkeypatch.setattr(preflight, "check_model_files", held_check)
    w, _ = make_window(qtbot, settings, None, lambda folder: None)
    w.open_first_launch()
    d = w.first_launch
    d.use_folder(tmp_path)
    # use_folder has returned while the check is still held on its worker: the window is not frozen
    assert not checked.is_set() and "Checking" in d.status.text() and not d.existing.isEnabled()
    gate.set()
    qtbot.waitUntil(lambda: d.check_job is None, timeout=10_000)
    assert "cannot be used" in d.status.text() and d.existing.isEnabled()

    bomb = damaged_copy(tiny_weights, tmp_path / "bomb",
                        lambda f: ((f / DECODER_CONFIG).unlink(), (f / DECODER_CONFIG).write_text(yaml_bomb())))
    d.use_folder(bomb)
    qtbot.waitUntil(lambda: d.check_job is None, timeout=10_000)
    text = d.status.text()
    assert "cannot be used" in text and "YAML alias" in text and "\n" not in text and len(text) < 1100
    assert w.weights_dir is None

    with qtbot.waitSignal(d.weights_ready, timeout=10_000):
        d.use_folder(tiny_weights)
    assert w.weights_dir == tiny_weights
