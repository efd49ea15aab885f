"""Song menu → Extend… and Regenerate From Here (issue 11): the new song in the library, linked to its parent."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from conftest import generate_one


def _action(window, text: str):
    return next(a for a in window.song_menu.actions() if a.text().startswith(text))


@pytest.fixture()
def real_window(qtbot, settings, tiny_weights, monkeypatch):
    # a continuation's seed is random unless given; the tiny random model may end a song at once
    # for some seeds, so these tests pin the pick (the engine tests cover seeds and endings)
    monkeypatch.setattr("engine.pipeline.resolve_seed", lambda request: 3 if request.seed is None else request.seed)
    from app.generation import real_pipeline_factory
    from conftest import make_window

    settings.max_tokens = 48  # every song, and every continuation's new part: 48 backbone tokens (24 frames)
    w, _ = make_window(qtbot, settings, tiny_weights, real_pipeline_factory)
    yield w
    if w.job is not None:
        w.job.cancel()
        w.job.wait()
    w.player.stop()


def make_song(qtbot, w, **compose) -> int:
    return generate_one(qtbot, w, **compose).id


def select(w, song_id: int) -> None:
    w.list.setCurrentIndex(w.model.index(w.model.row_of(song_id)))


def test_extend_dialog_makes_a_longer_song_linked_to_its_parent(qtbot, real_window):
    from app.library.model import CutRole, ParentNoteRole
    from engine.extend import extended_minutes

    w = real_window
    parent_id = make_song(qtbot, w)
    parent = w.library.get(parent_id)
    parent_frames = np.load(f"{parent.audio_path}.codes.npy").shape[1]
    select(w, parent_id)
    _action(w, "Extend…").trigger()
    dialog = w.extend_dialog
    assert dialog.isVisible() and f"“{parent.title}” is 0:01 long" in dialog.intro.text()  # 24 frames: 1.1 s
    assert "a 1-minute song" in dialog.estimate.text()
    dialog.minutes.setValue(2)
    dialog.lyrics.setPlainText("a new verse")
    with qtbot.waitSignal(w.song_added, timeout=60_000) as added:
        qtbot.mouseClick(dialog.extend_button, Qt.MouseButton.LeftButton)
        assert w.list.delegate.cut_marks == {parent_id: 1.0}  # the cut, on the parent's waveform
    qtbot.waitUntil(lambda: w.job is None, timeout=30_000)
    assert w.list.delegate.cut_marks == {}  # gone once the song is made
    child = w.library.get(added.args[0])
    assert child.parent["song"] == parent.audio_path.name
    assert child.parent["cut_frame"] == child.parent["frames"] == parent_frames
    assert child.title == f"{parent.title} (extended)"
    assert child.request["lyrics"] == "[Verse]\nhello world\n\na new verse"  # new lyrics follow the song's own
    assert child.request["minutes"] == extended_minutes(parent.duration_s, 2) == 1  # 1 + 0.8 is nearest 0:01 + 2
    assert child.duration_s > parent.duration_s
    index = w.model.index(w.model.row_of(child.id))
    assert index.data(ParentNoteRole) == f"extended from “{parent.title}”"
    assert f"Extended from “{parent.title}”" in index.data(Qt.ItemDataRole.ToolTipRole)
    assert index.data(CutRole) == pytest.approx(parent.duration_s / child.duration_s, abs=0.01)
    w.library.rename(parent_id, "First Take")
    w.model.refresh()
    assert w.model.index(w.model.row_of(child.id)).data(ParentNoteRole) == "extended from “First Take”"
    # the parent's audio is kept exactly, up to the decoder halo before the cut
    import soundfile
    a, _ = soundfile.read(parent.audio_path, dtype="int16")
    b, _ = soundfile.read(child.audio_path, dtype="int16")
    keep = (parent_frames - 16) * 2048
    assert keep > 0 and np.array_equal(a[:keep], b[:keep])


def test_regenerate_from_here_uses_the_player_position(qtbot, real_window):
    from app.library.model import ParentNoteRole

    w = real_window
    parent_id = make_song(qtbot, w, tags=("Jazz",), instrumental=True)
    parent = w.library.get(parent_id)
    select(w, parent_id)
    w.song_menu.aboutToShow.emit()
    assert _action(w, "Regenerate From").text() == "Regenerate From Here"
    _action(w, "Regenerate From").trigger()  # not in the player: says what to do, starts nothing
    assert w.job is None and "pause where the new version should start" in w.status.text()

    assert w.player.load_file(parent.audio_path, parent_id)
    w.player.seek(0.3)
    w.song_menu.aboutToShow.emit()
    assert _action(w, "Regenerate From").text() == "Regenerate From Here (0:00)"
    with qtbot.waitSignal(w.song_added, timeout=60_000) as added:
        _action(w, "Regenerate From").trigger()
        cut = math.floor(0.3 * 44_100 / 2048)
        frames = np.load(f"{parent.audio_path}.codes.npy").shape[1]
        assert w.list.delegate.cut_marks == {parent_id: pytest.approx(cut / frames)}
    qtbot.waitUntil(lambda: w.job is None, timeout=30_000)
    child = w.library.get(added.args[0])
    assert child.parent["cut_frame"] == cut and child.parent["frames"] == frames
    assert child.request["tags"] == "Jazz" and child.request["instrumental"]
    assert child.request["minutes"] == parent.request["minutes"]  # a new version of the same song
    assert child.title == f"{parent.title} (from 0:00)"
    assert w.model.index(w.model.row_of(child.id)).data(ParentNoteRole) == f"from “{parent.title}” at 0:00"


def test_a_song_without_codes_cannot_be_extended(qtbot, fake_window):
    w = fake_window
    rec = generate_one(qtbot, w)
    Path(f"{rec.audio_path}.codes.npy").unlink()
    select(w, rec.id)
    _action(w, "Extend…").trigger()
    assert w.extend_dialog is None and w.job is None
    assert "has no saved codes" in w.status.text() and w.status.property("level") == "error"
    assert len(w.pipelines) == 1  # nothing more was started


class RecordingPipeline:
    """The fake pipeline, recording the continuation it was given."""

    def __init__(self, inner) -> None:
        self.inner, self.continuations = inner, []

    def generate(self, request, cancel, **options):
        self.continuations.append(options.get("continuation"))
        return self.inner.generate(request, cancel, **options)


def test_memory_check_counts_the_kept_part_and_generate_anyway_keeps_the_continuation(qtbot, fake_window,
                                                                                      monkeypatch):
    from app import extend

    w = fake_window
    rec = generate_one(qtbot, w)
    asked = []
    monkeypatch.setattr("app.memory_check.continuation_warning",
                        lambda request, folder, prefix, preview=False: (None if preview else asked.append((request, prefix)))
                        or "Needs 99 GB.")
    recording = RecordingPipeline(w.pipelines[0])
    w.controller.provider._pipeline = recording
    assert not extend.extend_song(w, rec, 1)
    frames = np.load(f"{rec.audio_path}.codes.npy").shape[1]
    assert asked and asked[0][1] == frames and w.memory_box is not None
    with qtbot.waitSignal(w.song_added, timeout=15_000):
        qtbot.mouseClick(next(b for b in w.memory_box.buttons() if b.text() == "Generate Anyway"),
                         Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.job is None, timeout=10_000)
    (continuation,) = recording.continuations
    assert continuation.cut_frame == frames and continuation.parent == rec.audio_path.name


def test_continuation_memory_estimate_includes_the_prefill(real_memory_check):
    from engine import memory
    from engine.request import SongRequest

    request = SongRequest(tags="Pop", instrumental=True, minutes=10)
    seen = []
    real = memory.memory_warning
    try:
        memory.memory_warning = lambda req, device, dtype, **kw: seen.append((req, kw)) or None
        real_memory_check.continuation_warning(request, None, 11_000)
    finally:
        memory.memory_warning = real
    (req, kw), = seen
    assert req.max_tokens == 23_552 - 22_000 and kw["frames"] == 11_776
    assert kw["prompt_tokens"] == memory.guess_prompt_tokens(request) + 22_000


def test_extend_needs_this_macs_engine(qtbot, fake_window):
    from app import extend

    w = fake_window
    rec = generate_one(qtbot, w)
    w.settings.server_url = "http://127.0.0.1:9"
    assert not extend.extend_song(w, rec, 1)
    assert "needs this Mac's engine" in w.status.text() and w.list.delegate.cut_marks == {}
    assert w.memory_box is None and w.job is None  # refused before the memory question


def test_a_library_from_before_parents_gets_the_column_and_keeps_its_songs(tmp_path):
    import sqlite3

    from app.library.store import SCHEMA, Library, SongRecord

    db = tmp_path / "library.db"
    with sqlite3.connect(db) as conn:  # the layout before issue 11: no parent_json
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO songs (title, created_at, audio_path) VALUES ('old', '2024-01-01', '/x/old.wav')")
    conn.close()
    library = Library(db)
    (old,) = library.songs()
    assert old.title == "old" and old.parent == {}
    new_id = library.add(SongRecord(title="new", audio_path=Path("/x/new.wav"),
                                    parent={"song": "old.wav", "cut_frame": 3, "cut_seconds": 0.139, "frames": 9}))
    assert library.get(new_id).parent["cut_frame"] == 3 and library.problems == []
    library.close()
    assert Library(db).get(new_id).parent["song"] == "old.wav"
