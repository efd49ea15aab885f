"""Khala for Mac: packaging metadata, entry points and (on macOS) py2app options.

`pip install -e .` never touches py2app. `python setup.py py2app` (macOS only, see
packaging/build_app.sh) loads the bundle options from packaging/app_config.py.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "engine" / "__init__.py").read_text()).group(1)

INSTALL_REQUIRES = [
    "torch>=2.4",
    "numpy>=1.26",
    "safetensors>=0.4",
    "pyyaml>=6",
    "tokenizers>=0.19",
    "huggingface_hub>=1.0",
    "soundfile>=0.12",
    "mutagen>=1.45",  # title, tags, lyrics and seed inside WAV/FLAC/MP3 files
    "sounddevice>=0.4.6",
    "PySide6-Essentials>=6.6,<6.12",  # 6.12.0 drops references to None (tests/app/test_app_inputs.py)
]

TEST_REQUIRES = ["pytest>=8", "pytest-qt>=4.4", "pytest-timeout>=2.3"]


def load_app_config() -> ModuleType:
    """packaging/app_config.py, loaded by path (a `packaging` package would shadow PyPI's)."""
    spec = importlib.util.spec_from_file_location("khala_app_config", ROOT / "packaging" / "app_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def py2app_kwargs() -> dict[str, object]:
    if "py2app" not in sys.argv[1:]:
        return {}
    if sys.platform != "darwin":
        sys.exit("py2app builds Khala.app on macOS only (see packaging/build_app.sh).")
    try:
        import py2app  # noqa: F401  (registers the py2app command)
    except ImportError:
        sys.exit("py2app is not installed: pip install py2app")
    return load_app_config().setup_kwargs()


PY2APP = py2app_kwargs()

setup(
    name="khala",
    version=VERSION,
    description="Khala for Mac: write full songs with the open Khala music model on your own Mac.",
    python_requires=">=3.10",
    packages=find_packages(include=["engine", "engine.*", "app", "app.*"]),
    include_package_data=True,
    # py2app (0.28.9+) refuses install_requires; the build environment already has them.
    install_requires=[] if PY2APP else INSTALL_REQUIRES,
    extras_require={} if PY2APP else {"test": TEST_REQUIRES},
    entry_points={
        "console_scripts": ["khala=engine.cli:main"],
        "gui_scripts": ["khala-app=app.main:main"],
    },
    **PY2APP,
)
