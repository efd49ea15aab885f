"""Issue 16, app side: relaunch after a kill, a damaged / truncated / locked / read-only library,
and settings that are read back with their types. Each fault is made for real (a killed process,
bytes on disk, file modes, a lock held by another process, a hand-edited INI file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FakePipeline, fill_compose, make_window
from library_faults import damage_one_page, locked_by_another_process, read_only, record_songs, write_songs

ROOT = Path(__file__).resolve().parents[2]


def _window(qtbot, settings, monkeypatch, pipelines: list | None = None):
    """The real window over a FakePipeline; waits until the launch reconcile has finished."""
    monkeypatch.setattr("app.generation.weights_problem", lambda folder: None)
    made = pipelines if pipelines is not None else []
    w, _ = make_window(qtbot, settings, Path("/nonexistent-weights"),
                       lambda folder: made.append(FakePipeline(folder)) or made[-1])
    qtbot.waitUntil(lambda: not w.startup.reconciler.running, timeout=30_000)
    qtbot.wait(10)  # the last queued signals
    return w


def _titles(window) -> list[str]:
    return sorted(window.model.record(r).title for r in range(window.model.rowCount()))


def _try_to_generate(qtbot, window, pipelines: list, songs_dir: Path) -> None:
    """Press Generate: the library's problem is shown inline, before any song is made."""
    before = sorted(p.name for p in songs_dir.iterdir()) if songs_dir.exists() else []
    fill_compose(window)
    window.generate()
    qtbot.wait(50)
    assert window.job is None and pipelines == []
    assert window.status.property("level") == "error"
    assert (sorted(p.name for p in songs_dir.iterdir()) if songs_dir.exists() else []) == before


# -- 1. relaunch after a kill ------------------------------------------------------------------------
KILLED_SAVE = """
import os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
os.fsync = lambda fd: None
from engine import song_file
from library_faults import make_song
folder, how = Path(sys.argv[1]), sys.argv[2]
if how == "after-commit":
    song_file._roll_forward = lambda *a: os._exit(9)  # killed right after the commit point
elif how == "before-commit":
    song_file._commit = lambda *a: os._exit(9)  # killed with every part written, before the commit
song_file.write_song(make_song(7), folder / (how + ".wav"), title="Killed " + how)
"""


def _killed_save(folder: Path, how: str) -> None:
    script = KILLED_SAVE.format(tests=str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", script, str(folder), how], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == (0 if how == "complete" else 9), out.stderr[-2000:]


def test_relaunch_after_a_kill_lists_every_complete_song(qtbot, settings, app_data, tmp_path, monkeypatch):
    songs = settings.songs_dir
    recorded = write_songs(songs, 1, monkeypatch)
    from app import paths
    from app.library.store import Library

    lib = Library(paths.library_db_path())
    (tmp_path / "via-link").symlink_to(songs)
    linked = recorded[0]
    linked.audio_path = tmp_path / "via-link" / linked.audio_path.name  # recorded under another spelling
    record_songs(lib, [linked])
    lib.close()
    _killed_save(songs, "complete")  # the app was killed after writing the song, before recording it
    _killed_save(songs, "after-commit")  # a save killed after its commit point: recover() completes it
    _killed_save(songs, "before-commit")  # a save killed before: recover() removes it
    assert any(p.name.startswith(".khala-") for p in songs.iterdir())
    (songs / "legacy.wav").write_bytes((songs / "complete.wav").read_bytes())  # the old sidecar layout
    (songs / "legacy.json").write_text(json.dumps({"file": "legacy.wav", "title": "Legacy song",
                                                   "metadata": {"request": {"tags": "Jazz"}, "seed": 3}}))
    (songs / "orphan.wav").write_bytes((songs / "complete.wav").read_bytes())  # no sidecar: not a Khala song

    w = _window(qtbot, settings, monkeypatch)
    assert _titles(w) == ["Killed after-commit", "Killed complete", "Legacy song", "Song 0"]
    assert "3 songs found in the songs folder were added back to the library" in w.status.text()
    assert not [p.name for p in songs.iterdir() if p.name.startswith(".khala-")]
    assert not (songs / "before-commit.wav").exists()
    legacy = next(w.model.record(r) for r in range(4) if w.model.record(r).title == "Legacy song")
    assert legacy.seed == 3 and legacy.tags == "Jazz" and legacy.peaks.strip(b"\0")  # peaks read from the file
    w.close()

    again = _window(qtbot, settings, monkeypatch)  # the next launch adds nothing twice
    assert len(_titles(again)) == 4 and "added back" not in again.status.text()


# -- 3. the library database ---------------------------------------------------------------------------
def test_damaged_page_keeps_readable_rows_and_rebuilds_the_rest(qtbot, settings, app_data, monkeypatch):
    from app import paths
    from app.library.store import Library

    saved = write_songs(settings.songs_dir, 120, monkeypatch)
    lib = Library(paths.library_db_path())
    record_songs(lib, saved)
    lib.close()
    damage_one_page(paths.library_db_path())
    salvaged = len(Library(paths.library_db_path()).songs())  # what salvage alone keeps
    paths.library_db_path().unlink()
    aside = next(app_data.glob("library.sqlite3.corrupt-*"))
    aside.rename(paths.library_db_path())  # the damaged file again, for the window's own launch

    w = _window(qtbot, settings, monkeypatch)
    assert 117 <= salvaged < 120
    assert _titles(w) == sorted(f"Song {i}" for i in range(120))
    text = w.status.text()
    assert "damaged" in text and f"{salvaged} songs could be read" in text
    assert f"{120 - salvaged} songs found in the songs folder were added back" in text


@pytest.mark.parametrize("size", [0, 60])
def test_truncated_library_is_rebuilt_from_the_songs_folder(qtbot, settings, app_data, monkeypatch, size):
    from app import paths
    from app.library.store import Library

    saved = write_songs(settings.songs_dir, 3, monkeypatch)
    lib = Library(paths.library_db_path())
    record_songs(lib, saved)
    lib.close()
    db = paths.library_db_path()
    db.write_bytes(db.read_bytes()[:size])
    w = _window(qtbot, settings, monkeypatch)
    assert _titles(w) == ["Song 0", "Song 1", "Song 2"]
    assert "3 songs found in the songs folder were added back" in w.status.text()
    assert ("was empty" if size == 0 else "cut short") in w.status.text()


def test_locked_library_says_so_and_makes_nothing(qtbot, settings, app_data, monkeypatch):
    from app import paths
    from app.library import store

    saved = write_songs(settings.songs_dir, 2, monkeypatch)
    lib = store.Library(paths.library_db_path())
    record_songs(lib, saved)
    lib.close()
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.3)
    monkeypatch.setattr(store, "SAVE_CHECK_WAIT_S", 0.1)
    pipelines: list = []
    with locked_by_another_process(paths.library_db_path()):
        w = _window(qtbot, settings, monkeypatch, pipelines)
        assert "in use by another Khala" in w.status.text() and w.status.property("level") == "error"
        _try_to_generate(qtbot, w, pipelines, settings.songs_dir)
        assert "in use by another Khala" in w.status.text()
    assert not list(app_data.glob("*.corrupt-*"))
    w.model.refresh()
    assert _titles(w) == ["Song 0", "Song 1"]  # freed: the same library, whole


@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_library_opens_and_says_what_it_cannot_save(qtbot, settings, app_data, monkeypatch, what):
    from app import paths
    from app.library.store import Library

    saved = write_songs(settings.songs_dir, 2, monkeypatch)
    lib = Library(paths.library_db_path())
    record_songs(lib, saved[:1])  # song 1 is on disk only: a read-only library cannot take it back
    lib.close()
    pipelines: list = []
    target = paths.library_db_path() if what == "file" else app_data
    with read_only(target):
        w = _window(qtbot, settings, monkeypatch, pipelines)
        assert _titles(w) == ["Song 0"]  # listing works
        expected = "is read-only" if what == "file" else f"its folder {app_data} is read-only"
        assert expected in w.status.text() and "Unexpected" not in w.status.text()
        _try_to_generate(qtbot, w, pipelines, settings.songs_dir)
        assert expected in w.status.text() and "Done" not in w.status.text()


# -- 6. settings are read back with their types --------------------------------------------------------
BAD_SETTINGS = [  # (key, the raw INI value, what the property must return instead)
    ("songs_dir", "", "default songs"),
    ("songs_dir", "relative/songs", "default songs"),
    ("songs_dir", "a, b", "default songs"),  # INI reads this as a list
    ("songs_dir", "@Point(1 2)", "default songs"),
    ("weights_dir", "relative/model", None),
    ("weights_dir", "@Size(1 2)", None),
    ("audio_format", "ogg", "wav"),
    ("audio_format", "wav, flac", "wav"),
    ("keep_model_loaded", "maybe", False),
    ("keep_model_loaded", "@Variant(garbage)", False),
    ("last_request", "[1,2,3]", None),  # INI reads this as a list of strings
    ("last_request", '"[1,2,3]"', None),  # JSON, but not an object
    ("last_request", '"{not json"', None),
    ("last_request", "@ByteArray(abc)", None),
    ("geometry", "abc", b""),
    ("geometry", "@Rect(1 2 3 4)", b""),
    ("max_tokens", "1e99", None),
    ("max_tokens", "1", None),
    ("max_tokens", "-5", None),
    ("max_tokens", "23553", None),  # over the model's cap: every local song would be refused
    ("max_tokens", "99999999999999999999999999", None),
    ("server_url", "ftp://studio", ""),
    ("server_url", "http://user:pw@studio:8888", ""),
    ("server_url", "@Size(1 2)", ""),
]


def _write_ini(app_data: Path, lines: list[str]) -> None:
    app_data.mkdir(parents=True, exist_ok=True)
    (app_data / "settings.ini").write_text("[General]\n" + "\n".join(lines) + "\n")


@pytest.fixture()
def default_songs(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "default songs"
    monkeypatch.setattr("app.paths.default_songs_dir", lambda: folder)
    return folder


@pytest.mark.parametrize("key, raw, expected", BAD_SETTINGS)
def test_each_bad_setting_is_reset_with_a_note(app_data, default_songs, key, raw, expected):
    from app.settings import Settings

    _write_ini(app_data, [f"{key}={raw}"])
    settings = Settings()
    value = getattr(settings, key)
    assert value == (default_songs if expected == "default songs" else expected)
    assert len(settings.check()) == 1 and f"“{key}”" in settings.notes[0] and len(settings.notes[0]) < 300
    assert f"{key}=" not in (app_data / "settings.ini").read_text()  # reset on disk: noted once
    assert Settings().check() == []


def test_every_setting_is_covered_and_good_values_round_trip(app_data, default_songs, tmp_path):
    from app.settings import Settings
    from engine.request import SongRequest

    names = {n for n, v in vars(Settings).items() if isinstance(v, property)} - {"notes"}
    assert names == {key for key, _, _ in BAD_SETTINGS}  # a new setting needs its bad cases above
    s = Settings()
    assert s.check() == [] and s.songs_dir == default_songs and s.weights_dir is None
    request = SongRequest(tags="Pop", lyrics="la", minutes=3, temperature=0.9, seed=5, variations=2, max_tokens=40)
    s.songs_dir, s.weights_dir, s.audio_format = tmp_path / "songs", tmp_path / "model", "flac"
    s.keep_model_loaded, s.last_request, s.geometry, s.max_tokens = True, request, b"\x01\x02geo", 300
    s.server_url = "studio:8888/"
    again = Settings()
    assert again.server_url == "http://studio:8888"
    assert again.check() == []
    assert (again.songs_dir, again.weights_dir, again.audio_format) == (tmp_path / "songs", tmp_path / "model", "flac")
    assert (again.keep_model_loaded, again.last_request, again.geometry, again.max_tokens) == (
        True, request, b"\x01\x02geo", 300)
    with pytest.raises(ValueError):
        s.songs_dir = Path("relative")


def test_saved_request_keeps_its_good_fields(app_data, default_songs):
    from app.settings import Settings

    saved = {"tags": 5, "lyrics": "[Verse]\nkept", "minutes": 99, "temperature": float("nan"), "top_k": True,
             "seed": -1, "genre": "Jazz", "instrumental": "yes", "unknown": 1}
    _write_ini(app_data, [f"last_request={json.dumps(json.dumps(saved))}"])
    s = Settings()
    request = s.last_request
    assert (request.lyrics, request.genre, request.tags, request.minutes, request.top_k) == ("[Verse]\nkept", "Jazz",
                                                                                              "", 2, 80)
    assert request.seed is None and request.instrumental is False and request.temperature == 1.0
    assert len(s.notes) == 1 and all(f in s.notes[0] for f in ("tags", "minutes", "temperature", "top_k", "seed"))
    assert Settings().check() == []  # the repaired request was saved back


def test_relative_songs_folder_is_refused_when_chosen(tmp_path, monkeypatch):
    from app import paths

    monkeypatch.chdir(tmp_path)
    assert "full path" in paths.check_writable_dir(Path("songs"))
    assert "full path" in paths.check_writable_dir(Path(""))
    assert not (tmp_path / "songs").exists()


def test_bad_settings_open_the_window_with_notes(qtbot, app_data, default_songs, monkeypatch):
    from app.settings import Settings

    _write_ini(app_data, [f"{key}={raw}" for key, raw, _ in BAD_SETTINGS[:20:4]])
    w = _window(qtbot, Settings(), monkeypatch)
    assert w.isVisible() and w.settings.songs_dir == default_songs
    text = w.status.text()
    assert "“songs_dir”" in text and "(and 2 more)" in text and w.status.property("level") == "warn"


LAUNCH = """
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication(sys.argv[:1])

def report():
    from app.window import MainWindow
    window = next(w for w in app.topLevelWidgets() if isinstance(w, MainWindow))
    print("STATUS", window.status.text(), flush=True)
    app.quit()

QTimer.singleShot(300, report)
from app.main import main
sys.exit(main([]))
"""


def test_the_real_app_launches_over_the_issues_bad_settings(tmp_path, default_songs):
    """`last_request=[1,2,3]` or `geometry=abc` made every launch fail (an unexpected-error dialog)."""
    app_data = tmp_path / "appdata"
    _write_ini(app_data, ['last_request="[1,2,3]"', "geometry=abc", "songs_dir="])
    env = {**os.environ, "KHALA_APP_DATA": str(app_data), "XDG_STATE_HOME": str(tmp_path / "state"),
           "HOME": str(tmp_path / "home"), "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", LAUNCH], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)  # the old failure was a modal crash dialog: a hang here
    assert out.returncode == 0, out.stderr[-2000:]
    assert "unexpected error" not in out.stderr and not list((tmp_path / "state").rglob("crash-*.log"))
    status = next(line for line in out.stdout.splitlines() if line.startswith("STATUS"))
    assert "“last_request”" in status and "“geometry”" in status
    assert "songs_dir" not in (app_data / "settings.ini").read_text()


QUIT_EARLY = """
import sys
from pathlib import Path
from PySide6.QtWidgets import QApplication
app = QApplication(sys.argv[:1])
from app.generation import PipelineProvider
from app.main import build
from app.settings import Settings
settings = Settings()
settings.songs_dir = Path(sys.argv[1])
window, _ = build(settings, None, PipelineProvider(lambda folder: None))
window.show()
app.processEvents()
window.close()
print("reconciling at exit:", window.startup.reconciler.running, flush=True)
"""


def test_exit_while_songs_are_added_back_is_clean(tmp_path, monkeypatch):
    """A quit (or the smoke test) during the launch reconcile: its thread is stopped, not aborted."""
    write_songs(tmp_path / "songs", 60, monkeypatch)
    env = {**os.environ, "KHALA_APP_DATA": str(tmp_path / "appdata"), "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", QUIT_EARLY, str(tmp_path / "songs")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert "reconciling at exit: True" in out.stdout  # the case under test happened
    assert out.returncode == 0 and "Destroyed while thread" not in out.stderr, out.stderr[-2000:]
