"""App test fixtures: isolated app data, an ALSA file "sound card", a fake pipeline, the window."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# PortAudio reads the ALSA configuration when sounddevice is first imported, so the
# file-backed default device has to be in place before any test imports it.
ALSA_DIR = Path(tempfile.mkdtemp(prefix="khala-alsa-"))
ALSA_OUT = ALSA_DIR / "out.raw"
(ALSA_DIR / "asound.conf").write_text(
    "</usr/share/alsa/alsa.conf>\n"
    "pcm.!default {\n  type file\n  slave.pcm \"null\"\n"
    f"  file \"{ALSA_OUT}\"\n  format \"raw\"\n}}\n")
os.environ["ALSA_CONFIG_PATH"] = str(ALSA_DIR / "asound.conf")

from engine.errors import KhalaError
from engine.request import SongRequest
from engine.events import CancelToken, Preview, Progress, Song, Stage  # noqa: E402

PREVIEW_FRAMES_PER_STEP = 4  # the fake backbone's rough preview grows by this many frames a step


class FakePipeline:
    """Same interface as engine.pipeline.Pipeline: stages, progress, rough previews during the backbone
    when ``preview_every`` is given (a growing read-only [2, frames·2048] view of one buffer, as the
    engine sends them), one Song per variation, with the real pipeline's metadata keys
    (tests/app/test_app_contract.py ties the two together)."""

    def __init__(self, weights_dir: Path, step_s: float = 0.0, steps: int = 8) -> None:
        self.weights_dir, self.step_s, self.steps = weights_dir, step_s, steps
        self.requests: list[SongRequest] = []
        self.options: list[dict] = []
        self.hold = None  # a threading.Event: when set up, the backbone waits on it before its last step
        self.fail_on: str | None = None  # a request whose tags hold this fails in the backbone

    def generate(self, request: SongRequest, cancel: CancelToken, **options) -> Iterator[object]:
        self.requests.append(request)
        self.options.append(options)
        preview_every = options.get("preview_every")
        seed = request.seed if request.seed is not None else 1234
        rough = np.zeros((self.steps * PREVIEW_FRAMES_PER_STEP * 2048, 2), np.float32)
        for stage in ("load_backbone", "backbone", "load_superres", "superres", "load_decoder", "decode"):
            yield Stage(stage)
            if stage == "backbone" and self.fail_on and self.fail_on in request.tags:
                raise KhalaError("The backbone gave NaN; nothing was written.")
            if stage.startswith("load_"):
                continue
            for i in range(self.steps):
                cancel.check()
                time.sleep(self.step_s)
                if stage == "backbone" and i == self.steps - 1 and self.hold is not None:
                    while not self.hold.wait(0.02):
                        cancel.check()
                yield Progress(stage, i + 1, self.steps)
                if stage == "backbone" and preview_every:
                    yield fake_preview(rough, i)
        for v in range(request.variations):
            t = np.arange(int(44_100 * 1.5)) / 44_100
            rng = np.random.default_rng(seed + v)
            left = 0.3 * np.sin(2 * np.pi * 330 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
            audio = np.stack([left, 0.2 * rng.standard_normal(t.size)]).astype(np.float32)
            frames = audio.shape[1] // 2048
            yield Song(audio=audio, sample_rate=44_100, codes=np.zeros((64, frames), np.int64),
                       metadata=fake_metadata(request, seed + v, v, frames, audio.shape[1] / 44_100,
                                              bool(preview_every)), variation=v)


def fake_preview(rough: np.ndarray, step: int) -> Preview:
    """The rough song after backbone step ``step``: a tone written into ``rough`` [samples, 2], sent as a view."""
    a, b = step * PREVIEW_FRAMES_PER_STEP * 2048, (step + 1) * PREVIEW_FRAMES_PER_STEP * 2048
    t = np.arange(a, b) / 44_100
    rough[a:b] = 0.2 * np.sin(2 * np.pi * 220 * t)[:, None]
    frames = (step + 1) * PREVIEW_FRAMES_PER_STEP
    view = rough[:b].T
    view.flags.writeable = False
    return Preview(view, 44_100, frames)


def fake_metadata(request: SongRequest, seed: int, variation: int, frames: int, seconds: float,
                  previews: bool = False) -> dict:
    timings = {"load_backbone": 0.01, "backbone": 0.1, "load_superres": 0.01, "superres": 0.05,
               "load_decoder": 0.01, "decode": 0.02, **({"preview_final": 0.01} if previews else {})}
    return {"request": {**request.to_dict(), "seed": seed}, "seed": seed, "variation": variation,
            "tokens": {"backbone_prompt": 12, "superres_prompt": 12, "generated": 2 * frames + 1,
                       "audio_frames": frames, "prefix_frames": 0, "hit_eos": True, "dropped": 0},
            "prompt_truncated": [], "timings_s": timings, "seconds": seconds, "sample_rate": 44_100,
            "device": "cpu", "dtype": "float32", "decoder_dtype": "float32", "dtype_fallbacks": [],
            "engine": {"kind": "local"}, "parent": None,
            "versions": {"khala": "test", "torch": "test", "python": "test"}}


@pytest.fixture(autouse=True)
def no_memory_warning(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not depend on this machine's RAM; tests that ask for real_memory_check get it."""
    if "real_memory_check" not in request.fixturenames:
        monkeypatch.setattr("app.memory_check.memory_warning", lambda *a, **k: None)


@pytest.fixture(autouse=True)
def no_quick_check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list:
    """The doctor's quick check after a download is recorded, not run (tests ask for it by name)."""
    calls: list = []
    if "real_quick_check" not in request.fixturenames:
        monkeypatch.setattr("app.doctor_dialog.run_quick_check", lambda *a, **k: calls.append(a))
    return calls


@pytest.fixture()
def real_memory_check():
    from app import memory_check

    return memory_check


@pytest.fixture(autouse=True)
def app_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "appdata"
    monkeypatch.setenv("KHALA_APP_DATA", str(folder))
    return folder


@pytest.fixture()
def settings(tmp_path: Path):
    from app.settings import Settings

    s = Settings()
    s.songs_dir = tmp_path / "songs"
    return s


def make_window(qtbot, settings, weights_dir: Path | None, pipeline_factory):
    from app.generation import PipelineProvider
    from app.main import build

    window, tray = build(settings, weights_dir, PipelineProvider(pipeline_factory))
    qtbot.addWidget(window)
    window.ask = lambda title, text: True
    window.show()
    return window, tray


@pytest.fixture()
def fake_window(qtbot, settings, tmp_path, monkeypatch):
    """The real window over a FakePipeline (weights check bypassed)."""
    monkeypatch.setattr("app.generation.weights_problem", lambda folder: None)
    pipelines: list[FakePipeline] = []

    def factory(folder: Path) -> FakePipeline:
        pipelines.append(FakePipeline(folder, step_s=getattr(factory, "step_s", 0.0)))
        pipelines[-1].hold = getattr(factory, "hold", None)
        pipelines[-1].fail_on = getattr(factory, "fail_on", None)
        return pipelines[-1]

    window, tray = make_window(qtbot, settings, tmp_path / "weights", factory)
    window.factory, window.pipelines = factory, pipelines
    yield window
    job = window.job
    window.controller.shutdown()  # cancels the running song; nothing else starts
    if job is not None:
        job.wait()
    window.player.stop()


def generate_one(qtbot, window, **compose):
    """Compose a song (``fill_compose``'s defaults, or ``compose``), generate it in ``window`` and
    return its library record."""
    fill_compose(window, **compose)
    with qtbot.waitSignal(window.song_added, timeout=60_000) as added:
        window.generate()
    qtbot.waitUntil(lambda: window.job is None, timeout=30_000)
    return window.library.get(added.args[0])


def fill_compose(window, tags=("Pop", "Piano"), lyrics="[Verse]\nhello world", instrumental=False) -> None:
    panel = window.compose
    panel.picker.set_tags(list(tags))
    panel._set_instrumental(instrumental)
    panel.lyrics.set_text(lyrics)
    panel.duration.setValue(1)
