"""The main window: compose on the left, library on the right, player bar below."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEventLoop, QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (QApplication, QLabel, QMainWindow, QMessageBox, QScrollArea, QSplitter,
                               QVBoxLayout, QWidget)

from app.compose import ComposePanel
from app.footer import GenerationFooter
from app.generation import GenerationController, PipelineProvider
from app.jobs import Job
from app.library.model import LibraryModel
from app.library.queue_view import QueueRows
from app.library.store import Library
from app.library.view import LibraryView
from app.menus import build_menus
from app.player.bar import PlayerBar
from app.player.player import Player
from app.settings import Settings
from app.startup import Startup
from engine.request import SongRequest


class MainWindow(QMainWindow):
    """Widgets and their wiring; generation itself is the controller's (app.generation)."""

    song_added = Signal(int)
    busy_changed = Signal(bool)

    def __init__(self, settings: Settings, library: Library, weights_dir: Path | None,
                 provider: PipelineProvider | None = None, categories=None) -> None:
        super().__init__()
        self.setWindowTitle("Khala")
        self.settings, self.library = settings, library
        self.controller = GenerationController(settings, library, provider or PipelineProvider(), weights_dir, self)
        self.memory_box: QMessageBox | None = None
        self.tray = None
        self.quitting = False
        self.last_notification: tuple[str, str] | None = None
        self.ask = lambda title, text: QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

        self.compose = ComposePanel(categories, weights_dir)
        self.compose.message.connect(lambda m: self.show_message(m, "error"))
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        holder = QWidget()
        inner = QVBoxLayout(holder)
        inner.setContentsMargins(16, 12, 16, 12)
        inner.addWidget(self.compose)
        scroll.setWidget(holder)

        footer = GenerationFooter()
        self.progress, self.status = footer.progress, footer.status
        self.generate_button, self.cancel_button = footer.generate_button, footer.cancel_button
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button.clicked.connect(self.cancel_generation)
        left = QWidget()
        left_lay = QVBoxLayout(left)
        left_lay.setContentsMargins(0, 0, 0, 0)
        left_lay.setSpacing(0)
        left_lay.addWidget(scroll, 1)
        left_lay.addWidget(footer)
        left.setMinimumWidth(self.compose.minimumSizeHint().width() + inner.contentsMargins().left()
                             + inner.contentsMargins().right() + scroll.verticalScrollBar().sizeHint().width())

        self.model = LibraryModel(library, self)
        self.model.drag_failed.connect(lambda text: self.show_message(text, "error"))
        self.list = LibraryView()
        self.list.setModel(self.model)
        self.list.doubleClicked.connect(lambda index: self.play_row(index.row()))
        self.queue_rows = QueueRows(self.list, self.model)
        right = QWidget()
        right_lay = QVBoxLayout(right)
        right_lay.setContentsMargins(12, 12, 12, 0)
        right_lay.addWidget(QLabel("Library", objectName="paneTitle"))
        right_lay.addWidget(self.list, 1)
        right.setMinimumWidth(300)

        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)
        split.setSizes([640, 540])
        self.player = Player(self)
        self.player.error.connect(lambda m: self.show_message(m, "error"))
        self.player.position_changed.connect(self._on_play_position)
        self.player_bar = PlayerBar(self.player)
        self.player_bar.play_button.clicked.connect(self.toggle_play)
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(split, 1)
        lay.addWidget(self.player_bar)
        self.setCentralWidget(central)
        self.resize(1180, 760)
        self.setMinimumSize(left.minimumWidth() + right.minimumWidth() + split.handleWidth(), 600)

        QShortcut(QKeySequence("Ctrl+Return"), self, self.generate)
        QShortcut(QKeySequence("Ctrl+Enter"), self, self.generate)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.cancel_generation)
        QShortcut(QKeySequence(Qt.Key.Key_Space), self, self.toggle_play)
        build_menus(self)
        c = self.controller
        c.message.connect(self.show_message)
        c.progress.connect(self._on_progress)
        c.busy_changed.connect(self._set_busy)
        c.song_added.connect(self._on_song_added)
        c.log.connect(self.status.setToolTip)
        c.memory_warning.connect(self.confirm_memory)
        c.notify.connect(self.notify)
        self._wire_queue()
        if settings.last_request is not None:
            self.compose.set_request(settings.last_request)
        # -- launch report + songs-folder reconcile (issue 16): settings reset, library problems, songs added back
        self.startup = Startup(self)
        self.model.refresh()
        self._on_queue_changed()
        for problem in c.problems:
            self.show_message(problem, "warn")
        if c.restored:
            n = c.restored
            self.show_message(f"{n} song{'s were' if n > 1 else ' was'} waiting when Khala last quit: "
                              "Run or Discard at the top of the library.", "warn")

    @property
    def weights_dir(self) -> Path | None:
        return self.controller.weights_dir

    @property
    def job(self) -> Job | None:
        return self.controller.job

    def set_weights_dir(self, folder: Path | None) -> None:
        self.controller.weights_dir = folder
        self.compose.set_weights_dir(folder)
        if folder is not None:
            self.settings.weights_dir = folder
            self.show_message("The model is ready. Compose a song and press Generate.")

    def open_settings(self) -> None:
        from app.settings_dialog import SettingsDialog

        self.settings_dialog = SettingsDialog(self.settings, self.weights_dir, self.set_weights_dir,
                                              lambda: self.busy, self)
        self.settings_dialog.open()

    def check_new_model(self, folder: Path) -> None:
        """After the first model download, the doctor's quick check runs once by itself."""
        from app.doctor_dialog import run_quick_check

        self.quick_check = run_quick_check(self, folder, busy=lambda: self.busy)

    def open_first_launch(self) -> None:
        from app.first_launch import FirstLaunchDialog
        from engine.weights.folder import default_weights_dir

        dialog = FirstLaunchDialog(self.weights_dir or default_weights_dir(), self)
        dialog.weights_ready.connect(self.set_weights_dir)
        dialog.downloaded.connect(self.check_new_model)
        self.first_launch = dialog
        dialog.show()

    # -- messages ----------------------------------------------------------------------
    def show_message(self, text: str, level: str = "") -> None:
        self.status.setText(text)
        self.status.setProperty("level", level)
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)

    def notify(self, title: str, text: str) -> None:
        self.last_notification = (title, text)
        if self.tray is not None:
            self.tray.notify(title, text)

    @property
    def busy(self) -> bool:
        return self.controller.busy

    # -- generation (the controller does the work) -----------------------------------------
    def generate(self) -> None:
        """Compose panel → the queue (it starts at once when nothing else is being made)."""
        request, problem = self.compose.validated_request()
        if request is None:
            self.show_message(problem, "error")
            return
        self.controller.submit(request)

    def start_generation(self, request: SongRequest, check_memory: bool = True) -> bool:
        return self.controller.submit(request, check_memory)

    def cancel_generation(self) -> None:
        """The footer's Cancel (and Esc, and a running row's Cancel): stop the song being made; the
        next one in the queue starts."""
        if self.controller.job is not None:
            self.cancel_button.setEnabled(False)
            self.controller.cancel()

    def confirm_memory(self, request: SongRequest, warning: str, continuation: object = None) -> None:
        """A non-blocking question; the window stays usable while it is open."""
        if self.memory_box is not None:
            self.memory_box.finished.disconnect()
            self.memory_box.close()
        box = QMessageBox(QMessageBox.Icon.Warning, "This song may not fit in memory", warning,
                          QMessageBox.StandardButton.NoButton, self)
        box.setObjectName("memoryWarning")
        box.setInformativeText("Generate it anyway?")
        go = box.addButton("Generate Anyway", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)

        def done() -> None:
            self.memory_box = None
            if box.clickedButton() is go:
                self.controller.submit(request, check_memory=False, continuation=continuation)
            elif not self.busy:
                self.show_message("Not started. A shorter song or closing other apps needs less memory.")

        box.finished.connect(done)
        box.setWindowModality(Qt.WindowModality.NonModal)
        self.memory_box = box
        box.show()

    def _set_busy(self, busy: bool) -> None:
        """A song started (True, once per song) or the queue has nothing running (False). The compose
        panel and Generate stay usable: Generate then adds to the queue."""
        self.generate_button.setText("Add to Queue" if busy else "Generate")
        self.cancel_button.setEnabled(busy)
        self.progress.setVisible(busy)
        self.progress.setValue(0)
        if busy:
            self.queue_rows.on_started()
        self.busy_changed.emit(busy)

    # -- the queue and the rough preview ---------------------------------------------------
    def _wire_queue(self) -> None:
        c, rows = self.controller, self.queue_rows
        c.queue_changed.connect(self._on_queue_changed)
        c.progress.connect(rows.on_progress)
        c.preview.connect(self._on_preview)
        c.preview_complete.connect(self._on_preview_complete)
        rows.play_preview.connect(self.play_preview)
        self.player.state_changed.connect(
            lambda playing: rows.on_preview_playing(self.player.live_key if playing else None))
        rows.cancel.connect(lambda _id: self.cancel_generation())
        rows.remove.connect(c.remove)
        rows.run.connect(c.run_held)

    def _on_queue_changed(self) -> None:
        """Queue rows rebuilt; the selected song stays selected."""
        rec = self.selected_record()
        self.model.set_queue(self.controller.items())
        if rec is not None and self.model.row_of(rec.id) >= 0:
            self.list.setCurrentIndex(self.model.index(self.model.row_of(rec.id)))

    def _on_preview(self, item_id: int, preview) -> None:
        """A longer rough preview of the running song: the player follows it if it plays it (a view of the
        engine's buffer is handed over, never a copy)."""
        self.queue_rows.on_preview(item_id, preview.audio.shape[-1] / preview.sample_rate)
        if self.player.live_key == item_id:
            self.player.extend_live(preview.audio.T)

    def _on_preview_complete(self, item_id: int) -> None:
        if self.player.live_key == item_id:
            self.player.end_live()

    def play_preview(self, item_id: int) -> None:
        """Play (or pause) the running song's rough preview, from its start; it keeps growing while it plays."""
        preview, item = self.controller.last_preview, self.controller.current
        if preview is None or item is None or item.id != item_id:
            return
        if self.player.live_key == item_id and self.player.playing:
            self.player.pause()
            return
        if self.player.live_key != item_id:
            self.player.load_live(preview.audio.T, preview.sample_rate, item_id)
            self.player_bar.set_song(f"Rough preview · {item.title}")
            self.list.delegate.playing_id = None
        self.player.play()

    def _on_progress(self, percent: int, text: str) -> None:
        self.progress.setValue(percent)
        self.show_message(text)

    def _on_song_added(self, song_id: int) -> None:
        self.model.refresh()
        row = self.model.row_of(song_id)
        self.list.selectionModel().setCurrentIndex(self.model.index(row),
                                                   QItemSelectionModel.SelectionFlag.ClearAndSelect)
        self.song_added.emit(song_id)

    # -- playback ----------------------------------------------------------------------
    def selected_record(self):
        index = self.list.currentIndex()
        return self.model.record(index.row()) if index.isValid() else None

    def play_row(self, row: int) -> None:
        rec = self.model.record(row)
        if rec is None:
            return
        if self.player.song_id != rec.id:
            if not self.player.load_file(rec.audio_path, rec.id):
                self.library.check_files()
                self.model.refresh()
                return
            self.player_bar.set_song(rec.title)
        self.player.play()

    def toggle_play(self) -> None:
        rec = self.selected_record()
        if self.player.playing or rec is None or rec.id == self.player.song_id:
            self.player.toggle()
        else:
            self.play_row(self.list.currentIndex().row())

    def _on_play_position(self, seconds: float) -> None:
        self.list.delegate.playing_id = self.player.song_id
        self.list.delegate.played = seconds / self.player.duration if self.player.duration else 0.0
        self.list.viewport().update()

    # -- quitting ----------------------------------------------------------------------
    def request_quit(self, ask: bool = True) -> bool:
        """Quit; a song being made is cancelled first and waiting songs are kept for the next start
        (after asking, unless ``ask`` is False: SIGTERM is a cancel, never a question)."""
        waiting = self.controller.waiting()
        if self.busy or waiting:
            what = "A song is being made" if self.busy else "Songs are waiting"
            more = f" and {waiting} more are waiting" if self.busy and waiting > 1 else (
                " and 1 more is waiting" if self.busy and waiting else "")
            they = "They" if waiting else "It"
            if ask and not self.ask("Quit Khala?", f"{what}{more}. Quit anyway? {they} will be offered again "
                                                   "(Run or Discard) when Khala starts."):
                return False
            job = self.job
            self.controller.shutdown()
            if job is not None and job.running:
                loop = QEventLoop()
                job.finished.connect(loop.quit)
                QTimer.singleShot(60_000, loop.quit)
                loop.exec()
        self.quitting = True
        self.player.stop()
        self.settings.geometry = bytes(self.saveGeometry().data())
        QApplication.instance().quit()
        return True

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.quitting:
            event.accept()
        elif self.tray is not None and self.tray.available:
            event.ignore()
            self.hide()
        elif self.request_quit():
            event.accept()
        else:
            event.ignore()
