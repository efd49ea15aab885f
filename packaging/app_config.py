"""py2app options and Info.plist for Khala.app, importable without py2app or macOS.

``packaging/`` has no ``__init__.py`` on purpose: a package named ``packaging`` would
shadow the PyPI ``packaging`` library that setuptools and pytest import. Load this file
by path (``load_app_config()`` in setup.py, the same in tests).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESOURCES_DIR = ROOT / "resources"

APP_NAME = "Khala"
BUNDLE_ID = "app.khala.mac"
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "engine" / "__init__.py").read_text()).group(1)
MIN_MACOS = "12.3"  # torch's MPS backend needs macOS 12.3 or later
ICON_FILE = "resources/Khala.icns"
ICON_SOURCE = "resources/icon.png"
MAIN_SCRIPT = "packaging/khala_main.py"
ENTITLEMENTS = "packaging/entitlements.plist"

# Files the app looks up with app.resources.resource_path(); the build fails without them.
REQUIRED_RESOURCES = ["resources/tags.json", "resources/model_manifest.json", ICON_SOURCE]
# Not copied as a plain resource: the icon goes in through `iconfile`, the rest are build inputs.
_NOT_SHIPPED = {"Khala.icns", ".DS_Store", "Info.plist"}


def _resource_entries() -> list[str]:
    """Top-level entries of resources/ (files and folders), as paths relative to the repo.

    py2app copies each into Contents/Resources under its own name, so the bundle keeps
    the same layout as the source tree's resources/ folder.
    """
    found = {f"resources/{p.name}" for p in RESOURCES_DIR.iterdir()
             if p.name not in _NOT_SHIPPED} if RESOURCES_DIR.is_dir() else set()
    return sorted(found | set(REQUIRED_RESOURCES))


RESOURCES = _resource_entries()

PLIST: dict[str, object] = {
    "CFBundleName": APP_NAME,
    "CFBundleDisplayName": APP_NAME,
    "CFBundleExecutable": APP_NAME,
    "CFBundleIdentifier": BUNDLE_ID,
    "CFBundleShortVersionString": VERSION,
    "CFBundleVersion": VERSION,
    "CFBundlePackageType": "APPL",
    "CFBundleDevelopmentRegion": "en",
    "LSMinimumSystemVersion": MIN_MACOS,
    "LSArchitecturePriority": ["arm64", "x86_64"],
    "NSHighResolutionCapable": True,
    "NSSupportsAutomaticGraphicsSwitching": True,
    "NSRequiresAquaSystemAppearance": False,
    "LSApplicationCategoryType": "public.app-category.music",
    "NSHumanReadableCopyright": "Khala for Mac. The Khala model weights are under their own licence.",
}

# We use QtCore, QtGui and QtWidgets only.
QT_EXCLUDES = [
    "PySide6.QtWebEngineCore", "PySide6.QtWebEngineWidgets", "PySide6.QtWebEngineQuick",
    "PySide6.QtWebChannel", "PySide6.QtWebSockets", "PySide6.QtWebView",
    "PySide6.Qt3DCore", "PySide6.Qt3DRender", "PySide6.Qt3DInput", "PySide6.Qt3DLogic",
    "PySide6.Qt3DAnimation", "PySide6.Qt3DExtras",
    "PySide6.QtQuick", "PySide6.QtQuick3D", "PySide6.QtQuickControls2", "PySide6.QtQuickWidgets",
    "PySide6.QtQml", "PySide6.QtMultimedia", "PySide6.QtMultimediaWidgets",
    "PySide6.QtCharts", "PySide6.QtDataVisualization", "PySide6.QtGraphs",
    "PySide6.QtBluetooth", "PySide6.QtNfc", "PySide6.QtPositioning", "PySide6.QtLocation",
    "PySide6.QtSensors", "PySide6.QtSerialPort", "PySide6.QtRemoteObjects",
    "PySide6.QtSql", "PySide6.QtTest", "PySide6.QtDesigner", "PySide6.QtUiTools",
    "PySide6.QtHelp", "PySide6.QtPdf", "PySide6.QtPdfWidgets", "PySide6.QtSvgWidgets",
    "PySide6.QtOpenGL", "PySide6.QtOpenGLWidgets", "PySide6.QtScxml", "PySide6.QtStateMachine",
    "PySide6.QtSpatialAudio", "PySide6.QtTextToSpeech", "PySide6.QtHttpServer",
]
OTHER_EXCLUDES = [
    "tkinter", "_tkinter", "matplotlib", "IPython", "jupyter", "notebook", "pytest", "_pytest",
    "pytestqt", "pandas", "scipy", "sympy", "PyQt5", "PyQt6", "PySide2", "torchvision",
    "torchaudio", "triton", "tensorboard", "setuptools._distutils.tests", "lib2to3",
]

PACKAGES = [
    "engine", "app", "torch", "numpy", "safetensors", "tokenizers", "huggingface_hub",
    "soundfile", "sounddevice", "yaml", "_soundfile_data", "_sounddevice_data", "certifi",
]

PY2APP_OPTIONS: dict[str, object] = {
    "argv_emulation": False,  # Qt receives Finder's file-open events itself
    "iconfile": ICON_FILE,
    "plist": PLIST,
    "resources": RESOURCES,
    "packages": PACKAGES,
    "includes": ["PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"],
    "excludes": QT_EXCLUDES + OTHER_EXCLUDES,
    "strip": False,  # wheels ship stripped; stripping again only invalidates their signatures
    "optimize": 0,  # torch and friends read docstrings at import time
}


def setup_kwargs() -> dict[str, object]:
    """Extra setup() arguments for `python setup.py py2app`."""
    return {"app": [MAIN_SCRIPT], "options": {"py2app": PY2APP_OPTIONS}}
