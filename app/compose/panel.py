"""The compose panel: assembles the widgets and turns them into a SongRequest."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QPlainTextEdit, QPushButton, QToolButton, QVBoxLayout, QWidget)

from app.compose.advanced import AdvancedSettings
from app.compose.catalogue import Category, load_catalogue
from app.compose.duration import DurationSelector
from app.compose.lyrics import LyricsEditor, binding, cut_text
from app.compose.tags import TagPicker
from app.compose.tokens import TokenCounter
from engine.errors import KhalaError
from engine.request import SongRequest

TAGS, DESCRIPTION = 0, 1


def _segmented(names: list[str], parent: QWidget) -> tuple[QWidget, QButtonGroup]:
    box = QWidget(parent)
    lay = QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(0)
    group = QButtonGroup(box)
    for i, name in enumerate(names):
        button = QPushButton(name)
        button.setCheckable(True)
        button.setObjectName("segmentFirst" if i == 0 else "segmentLast" if i == len(names) - 1 else "segment")
        group.addButton(button, i)
        lay.addWidget(button)
    group.button(0).setChecked(True)
    return box, group


def section_title(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("sectionTitle")
    return label


def field_label(text: str) -> QLabel:
    return QLabel(text, objectName="fieldLabel")


class ComposePanel(QWidget):
    message = Signal(str)

    def __init__(self, categories: list[Category] | None = None, weights_dir: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.categories = load_catalogue() if categories is None else categories
        self._texts = {TAGS: "", DESCRIPTION: ""}
        self._syncing = False

        mode_box, self.mode = _segmented(["Tags", "Description"], self)
        voice_box, self.voice = _segmented(["Vocals", "Instrumental"], self)
        top = QHBoxLayout()
        top.addWidget(mode_box)
        top.addStretch(1)
        top.addWidget(voice_box)

        self.prompt = QPlainTextEdit()
        self.prompt.setObjectName("promptEdit")
        self.prompt.setTabChangesFocus(True)
        self.prompt.textChanged.connect(self._on_prompt_text)
        self.picker = TagPicker(self.categories)
        self.picker.changed.connect(self._on_picker)
        self.picker.message.connect(self.message)

        self.genre = QComboBox()
        self.genre.setEditable(True)
        self.genre.addItem("")
        genres = next((c.tags for c in self.categories if c.key.startswith("genre")), ())
        self.genre.addItems(list(genres))
        self.genre.lineEdit().setPlaceholderText("Any genre")
        self.duration = DurationSelector()
        form = QFormLayout()
        form.setContentsMargins(0, 4, 0, 0)
        form.setHorizontalSpacing(12)
        form.setVerticalSpacing(8)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        form.addRow(field_label("Genre"), self.genre)
        form.addRow(field_label("Length"), self.duration)

        self.counter = TokenCounter(weights_dir)
        self.lyrics = LyricsEditor(self.counter, self.request_unchecked)
        self.lyrics.message.connect(self.message)
        self.lyrics_title = self.lyrics.title
        self.advanced = AdvancedSettings()
        self.advanced.setVisible(False)
        self.advanced_toggle = QToolButton(text="Advanced", checkable=True)
        self.advanced_toggle.setObjectName("disclosure")
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.setToolTip("Temperature, top-k, seed and variations")
        self.advanced_toggle.toggled.connect(self._show_advanced)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(8)
        lay.addLayout(top)
        lay.addSpacing(2)
        self.prompt_title = section_title("Style")
        lay.addWidget(self.prompt_title)
        lay.addWidget(self.prompt)
        lay.addWidget(self.picker)
        lay.addLayout(form)
        lay.addSpacing(4)
        lay.addWidget(self.lyrics, 1)
        lay.addWidget(self.advanced_toggle)
        lay.addWidget(self.advanced)
        lay.addStretch(0)

        self.mode.idToggled.connect(lambda i, on: on and self._set_mode(i))
        self.voice.idToggled.connect(lambda i, on: on and self._set_instrumental(i == 1))
        for signal in (self.prompt.textChanged, self.genre.currentTextChanged, self.duration.changed):
            signal.connect(self.lyrics.schedule_count)
        self._set_mode(TAGS)
        self.lyrics.update_count()

    # -- state -----------------------------------------------------------------------
    @property
    def prompt_mode(self) -> int:
        return self.mode.checkedId()

    @property
    def instrumental(self) -> bool:
        return self.voice.checkedId() == 1

    def set_weights_dir(self, weights_dir: Path | None) -> None:
        self.counter.set_weights_dir(weights_dir)
        self.lyrics.update_count()

    def _show_advanced(self, on: bool) -> None:
        self.advanced.setVisible(on)
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def _set_mode(self, mode: int) -> None:
        if self.mode.checkedId() != mode:
            self.mode.button(mode).setChecked(True)
        self._syncing = True
        self.prompt.setPlainText(self._texts[mode])
        self._syncing = False
        tags = mode == TAGS
        self.picker.setVisible(tags)
        self.prompt.setFixedHeight(36 if tags else 84)
        self.prompt_title.setText("Tags" if tags else "Description")
        self.prompt.setPlaceholderText("Tags, separated by commas — or search and pick below" if tags
                                       else "Describe the song: mood, instruments, tempo, voice…")

    def _set_instrumental(self, on: bool) -> None:
        if self.voice.checkedId() != int(on):
            self.voice.button(int(on)).setChecked(True)
        self.lyrics.setVisible(not on)
        self.lyrics_title.setVisible(not on)
        self.lyrics.schedule_count()

    def _on_prompt_text(self) -> None:
        if self._syncing:
            return
        text = self.prompt.toPlainText()
        self._texts[self.prompt_mode] = text
        if self.prompt_mode == TAGS:
            self._syncing = True
            self.picker.set_tags([t for t in text.replace("\n", ",").split(",")])
            if self.picker.refused:  # over MAX_TAGS: the field keeps only the tags it took
                # the separator stays, so what is typed next is refused too, not appended to a tag
                self._texts[TAGS] = ", ".join(self.picker.tags()) + ", "
                self.prompt.setPlainText(self._texts[TAGS])
                self.prompt.moveCursor(QTextCursor.MoveOperation.End)
            self._syncing = False

    def _on_picker(self) -> None:
        if self._syncing:
            return
        text = ", ".join(self.picker.tags())
        self._texts[TAGS] = text
        if self.prompt_mode == TAGS:
            self._syncing = True
            self.prompt.setPlainText(text)
            self._syncing = False

    # -- requests --------------------------------------------------------------------
    def request_unchecked(self) -> SongRequest:
        tags_mode = self.prompt_mode == TAGS
        return SongRequest(
            tags=", ".join(self.picker.tags()) if tags_mode else "",
            description="" if tags_mode else self.prompt.toPlainText().strip(),
            genre=self.genre.currentText().strip(),
            lyrics="" if self.instrumental else self.lyrics.text(),
            instrumental=self.instrumental, minutes=self.duration.value(), **self.advanced.values())

    def validated_request(self) -> tuple[SongRequest | None, str]:
        """The request, or None and a message to show inline.

        The rules are the engine's (``SongRequest.validate``: tags, a description or a genre;
        lyrics that are not empty once cleaned), so the app accepts exactly what ``khala
        generate`` accepts; the app alone also refuses lyrics that would be cut to the prompt cap
        (the command line cuts them with a warning)."""
        r = self.request_unchecked()
        try:
            r.validate()
        except KhalaError as exc:
            return None, str(exc)
        if self.lyrics.over_cap():
            used, cap = binding(self.lyrics.last_count)
            return None, (f"The prompt is too long ({used:,} tokens; the limit is {cap:,}): "
                          f"{cut_text(self.lyrics.last_count)}")
        return r, ""

    def open_lyrics_file(self, parent: QWidget | None = None) -> bool:
        """File → Open Lyrics…: ask for a text file and load it as ``load_lyrics_file`` does.
        False when cancelled or the file cannot be loaded (the reason goes to ``message``)."""
        path, _ = QFileDialog.getOpenFileName(parent or self, "Open Lyrics", str(Path.home()),
                                              "Text files (*.txt *.lrc *.md);;All files (*)")
        return bool(path) and self.load_lyrics_file(Path(path))

    def load_lyrics_file(self, path: Path) -> bool:
        """Replace the lyrics with the file's text (UTF-8 rules of ``--lyrics-file``; one undo step)
        and switch to Vocals; False, with ``message`` emitted, when it cannot be read."""
        if not self.lyrics.load_file(Path(path)):
            return False
        self._set_instrumental(False)
        return True

    def set_request(self, r: SongRequest) -> None:
        self._texts = {TAGS: r.tags, DESCRIPTION: r.description}
        self.picker.set_tags(r.tags.split(","))
        self._texts[TAGS] = ", ".join(self.picker.tags())
        self._set_mode(DESCRIPTION if r.description.strip() else TAGS)
        self.genre.setCurrentText(r.genre)
        self._set_instrumental(r.instrumental)
        self.lyrics.set_text(r.lyrics)
        self.duration.setValue(r.minutes)
        self.advanced.set_from(r)
        self.lyrics.update_count()
