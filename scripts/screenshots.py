"""Screenshots of the real app: the README's four (empty, composing, generating, library)
plus first launch, quick generate, settings, an error, the smallest window, the queue and a
rough preview playing (audio goes to a file-backed ALSA device, as in the app tests).

Run under X (the script re-runs itself under xvfb-run when there is no display):
    python scripts/screenshots.py [--out docs]
It uses a throw-away app-data folder, a tiny random checkpoint (engine.testing.tiny) and the
real engine.pipeline; if the pipeline is not importable yet it says so and uses a
stand-in that emits the same events. The first song is slowed down between events so
the progress state can be captured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LYRICS = """[Verse]
Neon rivers under midnight rain
Every window hums a different name
[Chorus]
Hold on, hold on, the city's awake
We are the echoes the night couldn't take"""
SONGS = [("Neon Rivers", ["Synthwave", "Female Vocals", "Dreamy", "Synth Pads"]),
         ("Glass Harbour", ["Lo-fi", "Piano", "Chill"]),
         ("Night Bus", ["Cinematic", "Strings"])]


class Throttle:
    """Wraps a pipeline factory: sleeps ``delay`` seconds after each event, and holds the
    worker after the first event that ``hold_at`` accepts until ``resume`` is set, so the
    window can be photographed in exactly that state."""

    def __init__(self, factory: Callable[[Path], Any], delay: float) -> None:
        self.factory, self.delay = factory, delay
        self.hold_at: Callable[[object], bool] | None = None
        self.held, self.resume = threading.Event(), threading.Event()

    def __call__(self, folder: Path) -> Any:
        inner, throttle = self.factory(folder), self

        class Slow:
            def generate(self, request, cancel, **options):
                for event in inner.generate(request, cancel, **options):
                    time.sleep(throttle.delay)
                    yield event
                    if throttle.hold_at is not None and throttle.hold_at(event):
                        throttle.hold_at = None
                        throttle.held.set()
                        throttle.resume.wait(60)

        return Slow()


def stand_in(folder: Path):
    sys.path.insert(0, str(ROOT / "tests" / "app"))
    from conftest import FakePipeline  # same events as the real pipeline

    return FakePipeline(folder, steps=40)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="save only these shots, e.g. --only extend regenerate (the songs are still made)")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run") and not os.environ.get("KHALA_SHOTS_CHILD"):
        env = {**os.environ, "KHALA_SHOTS_CHILD": "1", "QT_QPA_PLATFORM": "xcb"}
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1400x900x24", sys.executable, __file__, "--out", str(args.out),
               *(["--only", *args.only] if args.only else [])]
        return subprocess.call(cmd, env=env)

    work = Path(tempfile.mkdtemp(prefix="khala-shots-"))
    home = work / "home"  # the shots show paths as a person's Mac does: ~/Music/Khala, not a temporary folder
    os.environ["HOME"] = str(home)
    os.environ["KHALA_APP_DATA"] = str(home / "Library" / "Application Support" / "Khala")
    file_sound_card(work)
    from PySide6.QtWidgets import QApplication

    from app.generation import PipelineProvider, real_pipeline_factory
    from app.main import build
    from app.settings import Settings
    from engine.testing.tiny import write_tiny_weights

    app = QApplication(sys.argv[:1])
    app.setApplicationName("Khala")
    weights = write_tiny_weights(home / "Models" / "khala-tiny")  # the default folder stays empty: first launch
    try:
        import engine.pipeline  # noqa: F401

        throttle = Throttle(real_pipeline_factory, 0.05)
    except ImportError as exc:
        print(f"engine.pipeline not importable ({exc}); using a stand-in with the same events")
        throttle = Throttle(stand_in, 0.04)
    settings = Settings()
    settings.songs_dir = home / "Music" / "Khala"
    settings.max_tokens = 900  # ~20 s songs from the tiny checkpoint
    window, tray = build(settings, weights, PipelineProvider(throttle))
    window.ask = lambda *a: True
    window.resize(1240, 800)
    window.show()
    args.out.mkdir(parents=True, exist_ok=True)

    def pump(seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            app.processEvents()
            time.sleep(0.01)

    def shot(name: str, widget=None) -> None:
        if args.only and name not in args.only:
            return
        pump(0.3)
        path = args.out / f"screenshot-{name}.png"
        (widget or window).grab().save(str(path))
        print("saved", path)

    shot("empty")
    panel = window.compose
    panel.picker.set_tags(SONGS[0][1])
    panel.genre.setCurrentText("Synth-pop")
    panel.lyrics.set_text(LYRICS)
    panel.duration.setValue(3)
    panel.picker.search.setText("synth")
    panel.lyrics.update_count()
    shot("composing")
    panel.picker.search.setText("")

    for i, (title, tags) in enumerate(SONGS):
        panel.picker.set_tags(tags)
        throttle.delay = 0.05 if i == 0 else 0.0
        if i == 0:
            throttle.hold_at = lambda ev: getattr(ev, "stage", "") == "backbone" and getattr(ev, "done", 0) >= 150
        window.generate()
        if i == 0:
            deadline = time.time() + 120
            while window.job is not None and time.time() < deadline and not throttle.held.is_set():
                pump(0.05)
            shot("generating")
            throttle.resume.set()
        while window.job is not None:
            pump(0.05)
        window.library.rename(window.library.songs()[0].id, title)
        window.model.refresh()
    window.list.setCurrentIndex(window.model.index(0))
    window.play_row(0)
    pump(0.3)
    window.player.pause()
    window.player.seek(window.player.duration * 0.4)
    window.show_message("Done. Double-click a song to play it.")
    shot("library")
    queue_shots(window, tray, throttle, shot, pump)

    extend_shots(window, throttle, shot, pump)
    panel.picker.set_tags([])
    window.generate()
    shot("error")
    if not args.only or set(args.only) - {"extend", "regenerate"}:
        extra_shots(window, tray, work, shot, pump)
    if window.job is not None:  # (the "error" shot's request has a genre, so it may have started a song)
        window.job.cancel()
        window.job.wait()
    window.quitting = True
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


def file_sound_card(work: Path) -> None:
    """A default ALSA device that writes to a file, so the player really plays under Xvfb."""
    if os.environ.get("ALSA_CONFIG_PATH"):
        return
    conf = work / "asound.conf"
    conf.write_text('</usr/share/alsa/alsa.conf>\npcm.!default {\n  type file\n  slave.pcm "null"\n'
                    f'  file "{work / "out.raw"}"\n  format "raw"\n}}\n')
    os.environ["ALSA_CONFIG_PATH"] = str(conf)


def real_time(player) -> Callable:
    """The file-backed ALSA device takes audio as fast as it comes; a sound card takes it in real time.
    Pace the player's callback like one, so a screenshot finds it mid-song. Returns the original."""
    original = player._callback

    def paced(outdata, frames, time_info, status):
        time.sleep(frames / player._rate)
        original(outdata, frames, time_info, status)

    player._callback = paced
    return original


def queue_shots(window, tray, throttle: Throttle, shot, pump) -> None:
    """A song being written (held at its first rough preview) with two more queued behind it, one of
    them from the tray's Quick Generate; then its rough preview playing."""
    from engine.events import Preview

    panel = window.compose
    panel.picker.set_tags(["Dream Pop", "Female Vocals", "Reverb"])
    panel.advanced.fixed_seed.setChecked(True)
    panel.advanced.seed.setValue(4)  # the tiny checkpoint writes all 900 tokens with it: a 10 s preview comes
    throttle.delay = 0.03
    throttle.held.clear()
    throttle.resume.clear()
    throttle.hold_at = lambda ev: isinstance(ev, Preview)
    window.generate()
    deadline = time.time() + 120
    while window.job is not None and time.time() < deadline and not throttle.held.is_set():
        pump(0.05)
    panel.advanced.fixed_seed.setChecked(False)
    panel.picker.set_tags(["Jazz", "Upright Bass", "Brushes"])
    window.generate()
    tray.quick_generate()
    tray.dialog.tags.setCurrentText("Lo-fi, Piano, Chill")
    tray.dialog.accept()
    window.list.setCurrentIndex(window.model.index(window.model.row_of(window.library.songs()[0].id)))
    shot("queue")
    current = window.controller.current
    paced = real_time(window.player)
    window.play_preview(current.id)
    pump(3.5)
    shot("preview")
    window.player.stop()
    window.player._callback = paced
    throttle.delay = 0.0
    throttle.resume.set()
    while window.job is not None:
        pump(0.05)


def extend_shots(window, throttle: Throttle, shot, pump) -> None:
    """Song → Extend… (the dialog), then Regenerate From Here at the player's position while it is being
    made: the cut marker on the song's waveform, the extended song below it linked to its parent."""
    def menu_action(text: str):
        return next(a for a in window.song_menu.actions() if a.text().startswith(text))

    window.list.setCurrentIndex(window.model.index(0))
    menu_action("Extend…").trigger()
    dialog = window.extend_dialog
    dialog.minutes.setValue(2)
    dialog.lyrics.setPlainText("[Bridge]\nStrings rise where the last bus turns\nAnd the harbour lights burn")
    shot("extend", dialog)
    dialog.accept()
    while window.job is not None:
        pump(0.05)
    rec = next(r for r in window.library.songs() if r.title == "Night Bus")
    window.list.setCurrentIndex(window.model.index(window.model.row_of(rec.id)))
    window.player.load_file(rec.audio_path, rec.id)  # as Play does (no sound device under Xvfb to play it)
    window.player_bar.set_song(rec.title)
    window.player.seek(window.player.duration * 0.45)
    throttle.held.clear()
    throttle.resume.clear()
    throttle.delay = 0.02
    throttle.hold_at = lambda ev: getattr(ev, "stage", "") == "backbone" and getattr(ev, "done", 0) >= 120
    menu_action("Regenerate From").trigger()
    deadline = time.time() + 120
    while window.job is not None and time.time() < deadline and not throttle.held.is_set():
        pump(0.05)
    shot("regenerate")
    throttle.resume.set()
    throttle.delay = 0.0
    while window.job is not None:
        pump(0.05)
    pump(1.0)  # let the job's thread end before the window goes


def extra_shots(window, tray, work: Path, shot, pump) -> None:
    from app.first_launch import FirstLaunchDialog
    from app.settings_dialog import SettingsDialog

    window.resize(window.minimumSize())
    shot("smallest")
    window.resize(1240, 800)
    from engine.weights.folder import default_weights_dir

    first = FirstLaunchDialog(default_weights_dir(), window)
    first.show()
    shot("first-launch", first)
    first.close()
    tray.quick_generate()
    tray.dialog.tags.setCurrentText("Lo-fi, Piano, Chill")
    shot("quick-generate", tray.dialog)
    tray.dialog.reject()
    dialog = SettingsDialog(window.settings, window.weights_dir, window.set_weights_dir, lambda: window.busy, window)
    dialog.show()
    shot("settings", dialog)
    dialog.reject()
    from app import memory_check

    memory_check.memory_warning = lambda request, folder, **kw: (
        "This song needs about 20.5 GB of memory at its peak (decoder); this machine has 16.0 GB, so it "
        "may swap heavily or fail. Close other apps or choose a shorter song.")
    window.compose.picker.set_tags(["Lo-fi", "Piano"])
    window.generate()
    shot("memory-warning")
    shot("memory-warning-box", window.memory_box)
    window.memory_box.reject()
    pump(0.1)
    doctor_shot(window, window.weights_dir, shot, pump)


def doctor_shot(window, weights: Path, shot, pump) -> None:
    """Settings → Check This Mac…, finished (the real probe on the tiny checkpoint, on this CPU)."""
    from app.doctor_dialog import DoctorDialog

    doctor = DoctorDialog(weights, window)
    doctor.show()
    doctor.start()
    deadline = time.time() + 300
    while (doctor.report is None or doctor.job is not None) and time.time() < deadline:
        pump(0.1)
    shot("doctor", doctor)
    doctor.close()


if __name__ == "__main__":
    sys.exit(main())
