"""What the main window says and does once, at launch (issue 16).

It shows, in the status line: the settings that were reset (``Settings.notes``), the library's
problems (damaged, locked, read-only, missing files) and, when the songs-folder reconcile
(app.library.reconcile) has added songs back, how many. The reconcile runs in the background
and the library list refreshes as songs come back."""

from __future__ import annotations

from PySide6.QtCore import QObject

from app.library.reconcile import Reconciler

MAX_SHOWN = 3  # messages shown at once; the rest are counted
MAX_CHARS = 400  # per message


def summary(messages: list[str]) -> str:
    """At most MAX_SHOWN messages (each at most MAX_CHARS), then "(and N more)"."""
    shown = [m if len(m) <= MAX_CHARS else m[: MAX_CHARS - 1] + "…" for m in messages[:MAX_SHOWN]]
    more = len(messages) - len(shown)
    return " ".join(shown) + (f" (and {more} more)" if more else "")


class Startup(QObject):
    """A child of the window, so its slots go with it; the reconcile job itself is kept until its
    thread ends (app.library.reconcile)."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        library, settings = window.library, window.settings
        self.notes = settings.check()
        self.problems = list(library.problems)
        self.missing = library.check_files()  # one message per song whose audio file is gone
        self.info: list[str] = []
        self._show()
        self.reconciler = Reconciler(library, settings.songs_dir)
        self.reconciler.added.connect(self._on_added)
        self.reconciler.done.connect(self._on_done)
        self.reconciler.start()

    @property
    def messages(self) -> list[str]:
        return self.problems + self.info + self.notes + self.missing

    def _show(self) -> None:
        if self.messages:
            level = "error" if self.problems or self.missing else "warn" if self.notes else ""
            self.window.show_message(summary(self.messages), level)

    def _on_added(self, _count: int) -> None:
        self.window.model.refresh()

    def _on_done(self, message: str) -> None:
        if not message:
            return
        (self.problems if self.reconciler.problem else self.info).append(message)
        if not self.window.busy:
            self._show()
