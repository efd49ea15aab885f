"""Khala for Mac: packaging metadata, entry points and (on macOS) py2app options."""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "engine" / "__init__.py").read_text()).group(1)

INSTALL_REQUIRES = [
    "torch>=2.4",
    "numpy>=1.26",
    "safetensors>=0.4",
    "pyyaml>=6",
    "tokenizers>=0.19",
    "huggingface_hub>=0.24",
    "soundfile>=0.12",
    "sounddevice>=0.4.6",
    "PySide6-Essentials>=6.6",
]

TEST_REQUIRES = ["pytest>=8", "pytest-qt>=4.4", "pytest-timeout>=2.3"]

setup(
    name="khala",
    version=VERSION,
    description="Khala for Mac: write full songs with the open Khala music model on your own Mac.",
    python_requires=">=3.10",
    packages=["engine", "app"],
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={
        "console_scripts": ["khala=engine.cli:main"],
        "gui_scripts": ["khala-app=app.main:main"],
    },
)
