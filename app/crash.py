"""Last-resort error handling: log the traceback to a file, tell the person plainly.

``install_excepthook()`` replaces ``sys.excepthook`` and ``threading.excepthook``. Each
unexpected exception is written to ``<log folder>/crash-<time>-<pid>.log``; then, if a
QApplication exists, a dialog shows a short message and where the details were saved
(never the raw traceback); otherwise one line goes to stderr. Qt is imported lazily so
the hook still logs when Qt itself failed to load.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Callable

ShowDialog = Callable[[str, str, str], None]  # (title, text, informative text)

_showing = False  # one dialog at a time: an error in a paint handler must not stack dialogs
_bridge = None  # QObject living on the GUI thread that shows dialogs raised elsewhere


def log_dir(app_name: str = "Khala") -> Path:
    """macOS: ~/Library/Logs/<app>; elsewhere: $XDG_STATE_HOME/<app>/logs (~/.local/state)."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Logs" / app_name
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / app_name.lower() / "logs"


def install_log_file(app_name: str = "Khala") -> Path | None:
    """The app's loggers (``app.*``) write to <log_dir>/<app>.log (1 MB, 3 kept), never to stderr:
    a failed job's traceback is kept there for a bug report. None (and nothing logged) when the
    folder cannot be made."""
    import logging
    from logging.handlers import RotatingFileHandler

    logger = logging.getLogger("app")
    logger.propagate = False  # else Python's last-resort handler prints tracebacks to stderr
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    path = log_dir(app_name) / f"{app_name.lower()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = RotatingFileHandler(path, maxBytes=1 << 20, backupCount=3, encoding="utf-8",
                                                            delay=True)
    except OSError:
        logger.addHandler(logging.NullHandler())
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return path


def write_crash_log(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None,
                    app_name: str = "Khala", thread_name: str | None = None) -> Path:
    folder = log_dir(app_name)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"crash-{stamp}-{os.getpid()}.log"
    header = [
        f"{app_name} {_app_version()} crashed at {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        f"Python {platform.python_version()} on {platform.platform()}",
        f"Thread: {thread_name or threading.current_thread().name}",
        "",
    ]
    body = "".join(traceback.format_exception(exc_type, exc, tb))
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(header) + body + "\n")
    return path


def dialog_text(exc: BaseException, log_path: Path, app_name: str = "Khala") -> tuple[str, str, str]:
    """(title, text, informative text) for the dialog: what happened, in one line each."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(detail) > 160:
        detail = detail[:157] + "…"
    what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return (f"{app_name} — unexpected error",
            f"{app_name} ran into an unexpected problem, and the last action did not finish.",
            f"{what}\n\nDetails were saved to {log_path}")


def install_excepthook(app_name: str = "Khala", show: ShowDialog | None = None) -> None:
    """Install the hooks; ``show`` replaces the Qt message box (tests inject a fake)."""

    def on_error(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None,
                 thread_name: str | None = None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        try:
            path = write_crash_log(exc_type, exc, tb, app_name, thread_name)
            title, text, info = dialog_text(exc, path, app_name)
            print(f"{app_name}: unexpected error ({info.splitlines()[0]}); details saved to {path}",
                  file=sys.stderr)
            _notify(title, text, info, show)
        except Exception:  # the hook itself must never raise
            sys.__excepthook__(exc_type, exc, tb)

    def on_thread_error(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else None
        on_error(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback, name)

    sys.excepthook = on_error
    threading.excepthook = on_thread_error
    try:
        _gui_bridge()  # made now, on the GUI thread, so worker errors can be queued to it
    except Exception:
        pass


def _app_version() -> str:
    try:
        from engine import __version__
        return __version__
    except Exception:
        return "(unknown version)"


def _notify(title: str, text: str, info: str, show: ShowDialog | None) -> None:
    try:
        from PySide6.QtCore import QThread
        from PySide6.QtWidgets import QApplication
    except Exception:
        return
    app = QApplication.instance()
    if app is None:
        return
    show = show or _message_box
    if QThread.currentThread() == app.thread():
        _show_once(show, title, text, info)
    else:
        _gui_bridge(app.thread()).request.emit(show, title, text, info)


def _show_once(show: ShowDialog, title: str, text: str, info: str) -> None:
    global _showing
    if _showing:
        return
    _showing = True
    try:
        show(title, text, info)
    finally:
        _showing = False


def _message_box(title: str, text: str, info: str) -> None:
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.Critical, title, text)
    box.setInformativeText(info)
    box.exec()


def _gui_bridge(gui_thread: object | None = None):
    """A QObject on the GUI thread: a signal emitted from a worker is queued to it."""
    global _bridge
    if _bridge is None:
        from PySide6.QtCore import QObject, Signal, Slot

        class Bridge(QObject):
            request = Signal(object, str, str, str)

            @Slot(object, str, str, str)
            def show(self, show: ShowDialog, title: str, text: str, info: str) -> None:
                _show_once(show, title, text, info)

        bridge = Bridge()
        if gui_thread is not None:
            bridge.moveToThread(gui_thread)
        bridge.request.connect(bridge.show)
        _bridge = bridge
    return _bridge
