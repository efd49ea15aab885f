"""`Khala --version`: app, Python, Qt and PyTorch versions and the device songs would use.

The app never imports torch itself. The torch version comes from package metadata (or,
inside the bundle where metadata may be missing, from torch/version.py read as text);
the device comes from ``engine.device.pick_device()``, called only when the report is
made — the engine is allowed to import torch.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
from pathlib import Path


def torch_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("torch")  # locates the package without importing it
    if spec is None or spec.origin is None:
        return "not installed"
    version_file = Path(spec.origin).with_name("version.py")
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text()) if version_file.is_file() else None
    return found.group(1) if found else "unknown"


def device_report() -> str:
    try:
        from engine.device import dtype_name, pick_device, pick_dtype

        device = pick_device()
        return f"{device} ({dtype_name(pick_dtype(device))})"
    except Exception as exc:  # a bad KHALA_DEVICE, or torch failing to load
        return f"unavailable ({type(exc).__name__}: {exc})"


def qt_version() -> str:
    try:
        from PySide6 import QtCore, __version__

        return f"{QtCore.qVersion()} (PySide6 {__version__})"
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


def version_report() -> str:
    from engine import __version__

    return "\n".join([
        f"Khala {__version__}",
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        f"Qt {qt_version()}",
        f"PyTorch {torch_version()}",
        f"Device {device_report()}",
        f"System {platform.platform()}",
    ])
