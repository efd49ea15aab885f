"""`Khala --smoke-test`: prove a built bundle can load everything it needs, then exit.

Imports every module the app and engine need (each native library loads on import),
checks the bundled resources, round-trips audio through libsndfile, asks the engine
for the device (loads torch), and opens a Qt window offscreen. Prints one line per
check, then ``SMOKE OK`` (exit 0) or ``SMOKE FAIL`` (exit 1). packaging/build_app.sh
relies on both.
"""

from __future__ import annotations

import importlib
import io
import sys
from typing import Callable, TextIO

from app.resources import resource_path

SMOKE_MODULES = [
    "PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets",
    "numpy", "yaml", "safetensors", "tokenizers", "huggingface_hub", "soundfile", "sounddevice",
    "engine.pipeline", "engine.cli", "app.main",
]
SMOKE_RESOURCES = ["tags.json", "model_manifest.json", "icon.png", "Khala.icns"]


def _check_audio() -> str:
    import numpy as np
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.zeros((480, 2), dtype="float32"), 48000, format="FLAC")
    buf.seek(0)
    data, rate = soundfile.read(buf)
    assert data.shape == (480, 2) and rate == 48000
    return f"libsndfile {soundfile.__libsndfile_version__}"


def _check_qt(make_window: Callable[[], object] | None) -> str:
    from PySide6.QtWidgets import QApplication, QWidget

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = make_window() if make_window else QWidget()
    window.show()
    app.processEvents()
    window.close()
    return f"platform {app.platformName()}"


def _check_device() -> str:
    from app.version import device_report, torch_version

    device = device_report()
    if device.startswith("unavailable"):
        raise RuntimeError(device)
    return f"torch {torch_version()}, device {device}"


def smoke_test(modules: list[str] | None = None, resources: list[str] | None = None,
               make_window: Callable[[], object] | None = None, out: TextIO | None = None) -> int:
    """Run every check, report each; 0 when all passed. ``make_window`` builds the real main window."""
    out = out or sys.stdout
    checks: list[tuple[str, Callable[[], str]]] = []
    for name in SMOKE_MODULES if modules is None else modules:
        checks.append((f"import {name}", lambda name=name: getattr(importlib.import_module(name), "__file__", "") or ""))
    for name in SMOKE_RESOURCES if resources is None else resources:
        checks.append((f"resource {name}", lambda name=name: _existing(name)))
    checks += [("audio", _check_audio), ("device", _check_device), ("qt", lambda: _check_qt(make_window))]

    failed = 0
    for label, check in checks:
        try:
            print(f"ok   {label}: {check()}", file=out)
        except (Exception, SystemExit) as exc:  # a module calling sys.exit on import fails too
            failed += 1
            print(f"FAIL {label}: {type(exc).__name__}: {exc}", file=out)
    print("SMOKE OK" if not failed else f"SMOKE FAIL ({failed} of {len(checks)} checks)", file=out)
    out.flush()
    return 1 if failed else 0


def _existing(name: str) -> str:
    path = resource_path(name)
    if not path.is_file():
        raise FileNotFoundError(path)
    return str(path)
