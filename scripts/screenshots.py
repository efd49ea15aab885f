"""Screenshots of the real app for the README: empty, composing, generating, library.

Run under X (the script re-runs itself under xvfb-run when there is no display):
    python scripts/screenshots.py [--out docs]
It uses a throw-away app-data folder, a tiny random checkpoint (engine.tiny) and the
real engine.pipeline; if the pipeline is not importable yet it says so and uses a
stand-in that emits the same events. Generation is slowed down between events so the
progress state can be captured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LYRICS = """[Verse]
Neon rivers under midnight rain
Every window hums a different name
[Chorus]
Hold on, hold on, the city's awake
We are the echoes the night couldn't take"""


def slowed(factory, delay: float):
    class Slow:
        def __init__(self, folder: Path) -> None:
            self.inner = factory(folder)

        def generate(self, request, cancel):
            for event in self.inner.generate(request, cancel):
                time.sleep(delay)
                yield event

    return Slow


def stand_in(folder: Path):
    sys.path.insert(0, str(ROOT / "tests" / "app"))
    from conftest import FakePipeline  # same events as the real pipeline

    return FakePipeline(folder, steps=40)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run") and not os.environ.get("KHALA_SHOTS_CHILD"):
        env = {**os.environ, "KHALA_SHOTS_CHILD": "1", "QT_QPA_PLATFORM": "xcb"}
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1400x900x24", sys.executable, __file__, "--out", str(args.out)]
        return subprocess.call(cmd, env=env)

    work = Path(tempfile.mkdtemp(prefix="khala-shots-"))
    os.environ["KHALA_APP_DATA"] = str(work / "appdata")
    from PySide6.QtWidgets import QApplication

    from app.generate import PipelineProvider, real_pipeline_factory
    from app.main import build
    from app.settings import Settings
    from engine.tiny import write_tiny_weights

    app = QApplication(sys.argv[:1])
    app.setApplicationName("Khala")
    weights = write_tiny_weights(work / "weights")
    try:
        import engine.pipeline  # noqa: F401

        factory, delay = real_pipeline_factory, 0.08
    except ImportError as exc:
        print(f"engine.pipeline not importable ({exc}); using a stand-in with the same events")
        factory, delay = stand_in, 0.04
    settings = Settings()
    settings.songs_dir = work / "songs"
    settings.max_tokens = 64
    window, _tray = build(settings, weights, PipelineProvider(slowed(factory, delay)))
    window.ask = lambda *a: True
    window.resize(1240, 800)
    window.show()
    args.out.mkdir(parents=True, exist_ok=True)

    def pump(seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            app.processEvents()
            time.sleep(0.01)

    def shot(name: str) -> None:
        pump(0.3)
        path = args.out / f"screenshot-{name}.png"
        window.grab().save(str(path))
        print("saved", path)

    shot("empty")
    panel = window.compose
    panel.picker.set_tags(["Synthwave", "Female Vocals", "Dreamy", "Synth Pads"])
    panel.genre.setCurrentText("Synth-pop")
    panel.lyrics.set_text(LYRICS)
    panel.duration.setValue(3)
    panel.picker.search.setText("synth")
    panel.lyrics.update_count()
    shot("composing")
    panel.picker.search.setText("")

    titles = ["Neon Rivers", "Glass Harbour", "Night Bus"]
    for i, title in enumerate(titles):
        window.generate()
        if i == 0:
            deadline = time.time() + 120
            while (window.progress.value() < 35 or "left" not in window.status.text()) and window.job is not None and time.time() < deadline:
                pump(0.05)
            shot("generating")
        while window.job is not None:
            pump(0.05)
        rec = window.library.songs()[0]
        window.library.rename(rec.id, title)
        window.model.refresh()
        panel.picker.set_tags([["Lo-fi", "Piano", "Chill"], ["Cinematic", "Strings"]][i % 2])
    window.list.setCurrentIndex(window.model.index(0))
    window.play_row(0)
    pump(0.3)
    window.player.pause()
    window.player.seek(window.player.duration * 0.4)
    window.show_message("Done. Double-click a song to play it.")
    shot("library")
    window.quitting = True
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
