"""The app tests' stand-in pipeline is tied to the real one (issue 10): the same event types, the same
stage names, the same song metadata keys; and a song's sidecar has the same keys from the CLI and
from the app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import FakePipeline

from engine.events import CancelToken, Song, Stage
from engine.request import SongRequest

REQUEST = SongRequest(tags="Pop", instrumental=True, minutes=1, seed=3, max_tokens=16, variations=2)


def key_paths(data: Any, prefix: str = "") -> set[str]:
    """Every key of nested dicts as a dotted path ("tokens.generated")."""
    if not isinstance(data, dict):
        return set()
    paths = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        paths |= {path} | key_paths(value, path + ".")
    return paths


def run(pipeline, **options) -> list[object]:
    return list(pipeline.generate(REQUEST, CancelToken(), **options))


def test_the_stand_in_emits_what_the_real_pipeline_emits(tiny_weights: Path) -> None:
    from engine.pipeline import Pipeline

    real = run(Pipeline(tiny_weights, device="cpu"))
    fake = run(FakePipeline(tiny_weights))
    assert {type(e).__name__ for e in real} == {type(e).__name__ for e in fake}
    assert [e.name for e in real if isinstance(e, Stage) and e.variation in (None, 0)] == \
           [e.name for e in fake if isinstance(e, Stage) and e.variation in (None, 0)]
    real_songs = [e for e in real if isinstance(e, Song)]
    fake_songs = [e for e in fake if isinstance(e, Song)]
    assert len(real_songs) == len(fake_songs) == 2
    for r, f in zip(real_songs, fake_songs):
        assert key_paths(r.metadata) == key_paths(f.metadata)
        assert set(r.metadata["timings_s"]) == set(f.metadata["timings_s"])
        assert r.audio.dtype == f.audio.dtype and r.audio.shape[0] == f.audio.shape[0] == 2


def test_cli_and_app_sidecars_have_the_same_keys(tiny_weights: Path, tmp_path: Path) -> None:
    from app.generation import PipelineProvider, generation_work, real_pipeline_factory
    from engine.cli import main
    from engine.song_file import SavedSong

    cli_dir, app_dir = tmp_path / "cli", tmp_path / "app"
    cli_dir.mkdir()
    app_dir.mkdir()
    assert main(["generate", "--weights", str(tiny_weights), "--tags", "Pop", "--instrumental", "--duration", "1",
                 "--seed", "3", "--max-tokens", "16", "--out", str(cli_dir / "s.wav"), "--quiet"]) == 0
    cli = json.loads((cli_dir / "s.wav.json").read_text())
    single = SongRequest(**{**REQUEST.to_dict(), "variations": 1})
    work = generation_work(PipelineProvider(real_pipeline_factory), tiny_weights, single, app_dir, "wav")
    saved = [e for e in work(CancelToken()) if isinstance(e, SavedSong)]
    app = json.loads(saved[0].sidecar_path.read_text())
    assert key_paths(cli) == key_paths(app)
    assert cli["timings_s"] and app["timings_s"] and set(cli["timings_s"]) == set(app["timings_s"])
    assert (cli["seed"], cli["request"]) == (app["seed"], app["request"])  # the same song, both ways
