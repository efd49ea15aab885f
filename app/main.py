"""`khala-app` / `python -m app`: the desktop app."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# The MPS seatbelt, before anything imports engine.pipeline (and so torch, which reads it as it
# loads): an op that Metal lacks runs on the CPU instead of stopping the song. A user's value is kept.
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
from engine.host_memory import tune_host_memory  # noqa: E402 - torch-free; Linux/glibc only

tune_host_memory()  # before torch loads (the engine runs in this process, on the job's thread)

from app import paths  # noqa: E402
from app.generation import PipelineProvider, real_pipeline_factory  # noqa: E402
from app.library.store import Library  # noqa: E402
from app.settings import Settings  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="khala-app", description="Khala: write songs on your own Mac.")
    parser.add_argument("--weights", type=Path, metavar="DIR", help="use the model in this folder")
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    parser.add_argument("--smoke-test", action="store_true", help="check that the app can start, then exit")
    args, _qt_args = parser.parse_known_args(argv)
    return args


def pick_weights_dir(cli: Path | None, settings: Settings) -> Path | None:
    """--weights, else the folder from settings, else the default folder if it holds the model."""
    if cli is not None:
        return cli.expanduser().absolute()
    if settings.weights_dir is not None:
        return settings.weights_dir
    from engine.weights.folder import default_weights_dir, locate_weights

    folder = default_weights_dir()
    try:
        locate_weights(folder)
    except Exception:  # noqa: BLE001 - not there yet: first launch
        return None
    return folder


def build(settings: Settings, weights_dir: Path | None, provider: PipelineProvider | None = None):
    """The main window and tray icon, wired. Needs a QApplication."""
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from app.resources import resource_path
    from app.style import STYLE
    from app.tray import Tray
    from app.window import MainWindow

    app = QApplication.instance()
    app.setStyleSheet(STYLE)
    icon = QIcon(str(resource_path("icon.png")))
    app.setWindowIcon(icon)
    if provider is None:
        provider = PipelineProvider(lambda folder: real_pipeline_factory(folder, settings.keep_model_loaded))
    window = MainWindow(settings, Library(paths.library_db_path()), weights_dir, provider)
    tray = Tray(window, icon)
    if tray.available:
        app.setQuitOnLastWindowClosed(False)
    return window, tray


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        from app.version import version_report

        print(version_report())
        return 0
    from app.crash import install_excepthook, install_log_file

    install_excepthook()
    install_log_file()
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Khala")
    app.setApplicationDisplayName("Khala")
    app.setOrganizationName("Khala")
    settings = Settings()
    if args.smoke_test:
        from app.smoke import smoke_test

        return smoke_test(make_window=lambda: build(settings, args.weights)[0])
    window, tray = build(settings, pick_weights_dir(args.weights, settings))
    geometry = settings.geometry
    if geometry:
        window.restoreGeometry(geometry)
    window.show()
    if window.weights_dir is None:
        window.open_first_launch()
    app.aboutToQuit.connect(window.controller.shutdown)  # cancels the song, keeps the queue for next time
    app._sigterm = quit_on_sigterm(window)  # noqa: SLF001 - kept alive with the app
    return app.exec()


def quit_on_sigterm(window) -> object:
    """SIGTERM (logout, `kill`, a service manager) is a cancel: the song being made stops, its
    temporary files go, and the app quits without asking. Python runs signal handlers only between
    bytecodes, so a short timer keeps the interpreter ticking while Qt's loop waits."""
    import signal

    from PySide6.QtCore import QTimer

    def on_sigterm(_signum: int, _frame: object) -> None:
        QTimer.singleShot(0, lambda: window.request_quit(ask=False))

    signal.signal(signal.SIGTERM, on_sigterm)
    tick = QTimer()
    tick.timeout.connect(lambda: None)
    tick.start(200)
    return tick


if __name__ == "__main__":
    sys.exit(main())
