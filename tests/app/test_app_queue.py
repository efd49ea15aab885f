"""The queue (issue 15): Generate adds to it while a song runs, rows at the top of the library with their
own progress and buttons, one song at a time, kept across a quit; and the running song's rough preview."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from conftest import PREVIEW_FRAMES_PER_STEP, fill_compose, make_window


@pytest.fixture()
def held(fake_window):
    """The fake backbone waits before its last step until the test lets it go."""
    gate = threading.Event()
    fake_window.factory.hold = gate
    yield gate
    gate.set()


def queue_generate(qtbot, w, tags: str) -> None:
    fill_compose(w, tags=(tags,), instrumental=True)
    qtbot.mouseClick(w.generate_button, Qt.MouseButton.LeftButton)


def rows(w) -> list[tuple[str, str]]:
    """(state, title) of the queue rows at the top of the library, in order."""
    return [(w.model.queue_item(r).state, w.model.queue_item(r).title) for r in range(w.model.queue_count())]


def row_widget(w, title: str):
    row = next(r for r in range(w.model.queue_count()) if w.model.queue_item(r).title == title)
    widget = w.list.indexWidget(w.model.index(row))
    assert widget is not None and widget.isVisible()
    return widget


def click(qtbot, widget, key: str) -> None:
    button = widget.buttons[key]
    assert button.isVisible() and button.isEnabled()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def stored(w) -> list[tuple[str, str]]:
    """What the database would give back after a relaunch: (state, tags) in order."""
    items, problems = w.controller.store.load()
    assert problems == []
    return [(i.state, i.request.tags) for i in items]


def wait_running(qtbot, w, tags: str) -> None:
    qtbot.waitUntil(lambda: w.controller.current is not None and w.controller.current.request.tags == tags,
                    timeout=10_000)


def test_three_queued_while_one_runs_all_finish_in_order(qtbot, fake_window, held):
    w = fake_window
    queue_generate(qtbot, w, "Jazz")
    wait_running(qtbot, w, "Jazz")
    for tags in ("Rock", "Folk", "Soul"):
        queue_generate(qtbot, w, tags)
        assert w.compose.isEnabled() and w.generate_button.isEnabled()
    assert rows(w) == [("running", "Jazz"), ("queued", "Rock"), ("queued", "Folk"), ("queued", "Soul")]
    assert stored(w) == [("running", "Jazz"), ("queued", "Rock"), ("queued", "Folk"), ("queued", "Soul")]
    assert row_widget(w, "Folk").status.text() == "Waiting · 2nd in line"
    assert set(row_widget(w, "Jazz").buttons) == {"preview", "cancel"}
    assert set(row_widget(w, "Rock").buttons) == {"remove"}
    assert w.generate_button.text() == "Add to Queue" and "3 waiting" in w.status.text()
    assert w.model.rowCount() == 4 and w.model.record(0) is None  # queue rows are not songs
    added = []
    w.song_added.connect(added.append)
    held.set()
    qtbot.waitUntil(lambda: len(added) == 4 and w.job is None, timeout=30_000)
    assert [r.tags for r in w.pipelines[0].requests] == ["Jazz", "Rock", "Folk", "Soul"]
    assert [w.library.get(i).tags for i in added] == ["Jazz", "Rock", "Folk", "Soul"]
    assert rows(w) == [] and stored(w) == [] and w.model.rowCount() == 4
    assert w.generate_button.text() == "Generate" and not w.cancel_button.isEnabled()


def test_cancel_of_the_running_song_starts_the_next(qtbot, fake_window, held):
    w = fake_window
    queue_generate(qtbot, w, "Jazz")
    wait_running(qtbot, w, "Jazz")
    queue_generate(qtbot, w, "Rock")
    click(qtbot, row_widget(w, "Jazz"), "cancel")
    wait_running(qtbot, w, "Rock")
    assert rows(w) == [("running", "Rock")] and stored(w) == [("running", "Rock")]
    assert w.cancel_button.isEnabled() and w.library.songs() == []
    qtbot.waitUntil(lambda: len(w.pipelines[0].requests) == 2, timeout=10_000)
    qtbot.keyClick(w, Qt.Key.Key_Escape)  # the footer's Cancel (Esc) also cancels the running one
    qtbot.waitUntil(lambda: w.job is None, timeout=10_000)
    assert rows(w) == [] and stored(w) == [] and w.library.songs() == []
    assert "Cancelled" in w.status.text() and [r.tags for r in w.pipelines[0].requests] == ["Jazz", "Rock"]


def test_remove_of_a_queued_song(qtbot, fake_window, held):
    w = fake_window
    queue_generate(qtbot, w, "Jazz")
    wait_running(qtbot, w, "Jazz")
    queue_generate(qtbot, w, "Rock")
    queue_generate(qtbot, w, "Folk")
    click(qtbot, row_widget(w, "Rock"), "remove")
    assert rows(w) == [("running", "Jazz"), ("queued", "Folk")]
    assert stored(w) == [("running", "Jazz"), ("queued", "Folk")]
    assert row_widget(w, "Folk").status.text() == "Waiting · 1st in line"
    held.set()
    qtbot.waitUntil(lambda: w.job is None and len(w.library.songs()) == 2, timeout=20_000)
    assert [r.tags for r in w.pipelines[0].requests] == ["Jazz", "Folk"]


def test_the_queue_survives_a_quit_and_is_offered_again(qtbot, fake_window, held, settings, tmp_path, monkeypatch):
    w = fake_window
    queue_generate(qtbot, w, "Jazz")
    wait_running(qtbot, w, "Jazz")
    queue_generate(qtbot, w, "Rock")
    asked = []
    w.ask = lambda title, text: asked.append(text) or True
    monkeypatch.setattr(QApplication, "quit", lambda *a: None)
    assert w.request_quit()
    assert "1 more is waiting" in asked[0] and w.job is None and w.library.songs() == []
    assert stored(w) == [("queued", "Jazz"), ("queued", "Rock")]  # the cancelled running song is kept

    # a relaunch: a new window over the same app-data folder; nothing starts by itself
    again, _tray = make_window(qtbot, settings, tmp_path / "weights", w.factory)
    assert again.job is None and rows(again) == [("held", "Jazz"), ("held", "Rock")]
    assert "2 songs were waiting" in again.status.text()
    jazz = row_widget(again, "Jazz")
    assert set(jazz.buttons) == {"run", "discard"} and "last quit" in jazz.status.text()
    click(qtbot, row_widget(again, "Rock"), "discard")
    assert rows(again) == [("held", "Jazz")] and stored(again) == [("held", "Jazz")]
    held.set()
    with qtbot.waitSignal(again.song_added, timeout=15_000):
        click(qtbot, row_widget(again, "Jazz"), "run")
    qtbot.waitUntil(lambda: again.job is None, timeout=10_000)
    assert rows(again) == [] and stored(again) == [] and [s.tags for s in again.library.songs()] == ["Jazz"]


def test_a_crash_loses_nothing(qtbot, fake_window, held):
    """Rows are written as they change: what a relaunch after a crash reads, mid-song, is the whole queue."""
    from app import paths
    from app.library.queue_store import QueueStore
    from app.library.store import Library

    w = fake_window
    queue_generate(qtbot, w, "Jazz")
    wait_running(qtbot, w, "Jazz")
    queue_generate(qtbot, w, "Rock")
    other = Library(paths.library_db_path())  # another process's view of the file
    items, problems = QueueStore(other).load()
    other.close()
    assert problems == [] and [(i.state, i.request.tags, i.request.instrumental) for i in items] == [
        ("running", "Jazz", True), ("queued", "Rock", True)]


def test_the_compose_panel_stays_usable_while_a_song_runs(qtbot, fake_window, held):
    from app import menus

    w = fake_window
    queue_generate(qtbot, w, "Jazz")
    wait_running(qtbot, w, "Jazz")
    assert w.busy and w.compose.isEnabled() and w.compose.lyrics.isEnabled() and w.generate_button.isEnabled()
    fill_compose(w, tags=("Rock", "Piano"), lyrics="[Verse]\nstill typing")
    assert w.compose.request_unchecked().lyrics == "[Verse]\nstill typing"
    held.set()
    qtbot.waitUntil(lambda: w.job is None, timeout=10_000)
    w.list.setCurrentIndex(w.model.index(w.model.row_of(w.library.songs()[0].id)))
    held.clear()
    queue_generate(qtbot, w, "Soul")
    wait_running(qtbot, w, "Soul")
    menus.use_settings(w)  # Use These Settings works while a song runs
    assert w.compose.request_unchecked().tags == "Jazz"


def test_tray_quick_generate_adds_to_the_same_queue(qtbot, fake_window, held):
    w = fake_window
    queue_generate(qtbot, w, "Jazz")
    wait_running(qtbot, w, "Jazz")
    tray = w.tray
    assert tray.quick_action.isEnabled()
    tray.quick_action.trigger()
    tray.dialog.tags.setCurrentText("Lo-fi")
    tray.dialog.accept()
    assert rows(w) == [("running", "Jazz"), ("queued", "Lo-fi")] and not tray.dialog.isVisible()
    assert stored(w)[1] == ("queued", "Lo-fi") and w.controller.items()[1].request.instrumental


def test_a_failed_song_is_held_with_its_reason_and_the_next_runs(qtbot, fake_window):
    w = fake_window
    w.factory.fail_on = "Boom"
    queue_generate(qtbot, w, "Boom")
    queue_generate(qtbot, w, "Jazz")
    qtbot.waitUntil(lambda: w.job is None and len(w.library.songs()) == 1, timeout=15_000)
    assert rows(w) == [("held", "Boom")] and stored(w) == [("held", "Boom")]
    assert "NaN" in row_widget(w, "Boom").status.text()
    assert w.last_notification[0] == "Song ready"  # Jazz, after "Song not made" for Boom


def test_the_running_row_plays_the_growing_rough_preview(qtbot, fake_window, held):
    w = fake_window
    queue_generate(qtbot, w, "Jazz")
    wait_running(qtbot, w, "Jazz")
    row = row_widget(w, "Jazz")
    qtbot.waitUntil(lambda: row.buttons["preview"].isEnabled(), timeout=10_000)
    steps_before_hold = w.pipelines[0].steps - 1
    qtbot.waitUntil(lambda: w.controller.last_preview.frames == steps_before_hold * PREVIEW_FRAMES_PER_STEP,
                    timeout=10_000)
    assert "rough" in row.buttons["preview"].text().lower() and "rough" in row.buttons["preview"].toolTip().lower()
    click(qtbot, row, "preview")
    p = w.player
    first = w.controller.last_preview
    assert p.live and p.live_key == row.item.id and p.playing
    assert w.player_bar.title.text() == "Rough preview · Jazz"
    assert np.shares_memory(p._frames, first.audio)  # the engine's buffer, not a copy
    assert p.duration == pytest.approx(first.frames * 2048 / 44_100)
    p.pause()  # the test's sound device is a file, not paced in real time: hold the playhead to check it
    p.seek(0.2)
    assert p.position == pytest.approx(0.2, abs=0.01)
    p.play()
    held.set()
    qtbot.waitUntil(lambda: w.job is None, timeout=10_000)
    last = w.pipelines[0].steps * PREVIEW_FRAMES_PER_STEP
    assert p.duration == pytest.approx(last * 2048 / 44_100)  # it followed the preview as it grew
    assert np.shares_memory(p._frames, w.controller.last_preview.audio)  # each time without a copy
    assert not p.live  # the backbone is done: playback ends at the preview's end
    assert p.position >= 0.2 and w.player_bar.slider.maximum() == int(p.duration * 10)
    assert w.pipelines[0].options[0]["preview_every"] == 10.0
    p.stop()


def test_the_fake_pipeline_sends_previews_as_the_real_one_does(tiny_weights, single_torch_thread):
    """The stand-in above is tied to engine.pipeline: with preview_every, both send Preview events of the
    same form (a read-only float32 [2, frames·2048] view whose .T is contiguous), the last one the whole
    rough song, and the same timing keys in the song's metadata."""
    from conftest import FakePipeline
    from engine.events import CancelToken, Preview, Song
    from engine.pipeline import Pipeline
    from engine.request import SongRequest

    request = SongRequest(tags="Pop", instrumental=True, minutes=1, seed=5, max_tokens=200)
    kinds, songs, previews = {}, {}, {}
    for name, pipeline in (("real", Pipeline(tiny_weights, device="cpu")), ("fake", FakePipeline(tiny_weights))):
        events = list(pipeline.generate(request, CancelToken(), preview_every=0.5))
        kinds[name] = {type(e).__name__ for e in events}
        songs[name] = next(e for e in events if isinstance(e, Song))
        previews[name] = [e for e in events if isinstance(e, Preview)]
    assert kinds["real"] == kinds["fake"] and "Preview" in kinds["real"]
    assert songs["real"].metadata["timings_s"].keys() == songs["fake"].metadata["timings_s"].keys()
    for name, shown in previews.items():
        last = shown[-1]
        assert last.audio.dtype == np.float32 and last.audio.shape == (2, last.frames * 2048), name
        assert not last.audio.flags.writeable and last.audio.T.flags.c_contiguous, name
    for name in ("real", "fake"):
        assert previews[name][-1].frames == songs[name].codes.shape[1], name


def test_the_store_keeps_a_continuation_and_drops_a_damaged_row(tmp_path):
    from app.library.queue_store import HELD, QueueStore
    from app.library.store import Library
    from engine.request import Continuation, SongRequest

    library = Library(tmp_path / "library.sqlite3")
    store = QueueStore(library)
    codes = np.random.default_rng(0).integers(0, 1024, (64, 50))
    first = store.add(SongRequest(tags="Pop"), Continuation(codes, 30, "/songs/a.wav"))
    second = store.add(SongRequest(tags="Rock", minutes=3))
    with library.connection:
        library.connection.execute("INSERT INTO queue (position, request_json, created_at) VALUES (9, '[1', 'x')")
    store.hold_all("from last time")
    items, problems = store.load()
    assert [i.id for i in items] == [first.id, second.id] and all(i.state == HELD for i in items)
    kept = items[0].continuation
    assert kept is not None and kept.cut_frame == 30 and kept.parent == "/songs/a.wav"
    np.testing.assert_array_equal(kept.codes, codes)
    assert items[0].title == "Pop — from a point" and items[1].request.minutes == 3
    assert len(problems) == 1 and "dropped" in problems[0]
    again, problems = store.load()
    assert [i.id for i in again] == [first.id, second.id] and problems == []  # the damaged row is gone for good
    library.close()
