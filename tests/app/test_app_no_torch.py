"""The app never imports torch: import every app module in a fresh interpreter and check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# app.smoke is the packaging's bundle check: it imports engine.pipeline on purpose, when run.
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for p in (ROOT / "app").rglob("*.py") if p.name != "__main__.py")


def test_app_modules_do_not_import_torch(tmp_path):
    code = ("import importlib, sys\n"
            f"for name in {MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            "from PySide6.QtWidgets import QApplication\n"
            "app = QApplication([])\n"
            "from app.settings import Settings\n"
            "from app.main import build\n"
            "window, tray = build(Settings(), None)\n"
            "window.show(); app.processEvents()\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "print('TORCH' if bad else 'CLEAN', bad[:3])\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "KHALA_APP_DATA": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CLEAN" in out.stdout, out.stdout
    assert len(MODULES) > 15 and "app.window" in MODULES and "app.compose.panel" in MODULES
