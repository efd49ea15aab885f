"""Packaging (issue 5): py2app options and plist, icon, resources, build script, workflow,
resource_path(), the crash hook, --version and the smoke test. py2app itself runs on macOS only."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import plistlib
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "packaging" / "build_app.sh"
WORKFLOW = ROOT / ".github" / "workflows" / "macos-app.yml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ICNS_PNG_TYPES = {"ic07": 128, "ic08": 256, "ic09": 512, "ic10": 1024,
                  "ic11": 32, "ic12": 64, "ic13": 256, "ic14": 512}


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cfg() -> ModuleType:
    return load(ROOT / "packaging" / "app_config.py", "khala_app_config_under_test")


def parse_icns(data: bytes) -> dict[str, bytes]:
    assert data[:4] == b"icns", "bad magic"
    assert struct.unpack(">I", data[4:8])[0] == len(data), "declared length != file size"
    chunks, pos = {}, 8
    while pos < len(data):
        kind, size = data[pos:pos + 4].decode("ascii"), struct.unpack(">I", data[pos + 4:pos + 8])[0]
        assert size >= 8 and pos + size <= len(data), f"chunk {kind} overruns the file"
        chunks[kind] = data[pos + 8:pos + size]
        pos += size
    assert pos == len(data)
    return chunks


def png_header(data: bytes) -> tuple[int, int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height, _depth, color = struct.unpack(">IIBB", data[16:26])
    return width, height, color


# --- py2app options and Info.plist -------------------------------------------------------

def test_plist_is_complete_and_round_trips(cfg: ModuleType) -> None:
    from engine import __version__

    plist = cfg.PLIST
    assert plist["CFBundleName"] == plist["CFBundleDisplayName"] == plist["CFBundleExecutable"] == "Khala"
    assert plist["CFBundleIdentifier"] == "app.khala.mac"
    assert plist["CFBundleShortVersionString"] == plist["CFBundleVersion"] == __version__
    assert plist["LSMinimumSystemVersion"] == "12.3"
    assert plist["NSHighResolutionCapable"] is True
    assert plist["LSApplicationCategoryType"] == "public.app-category.music"
    assert plist["NSHumanReadableCopyright"]
    assert "NSMicrophoneUsageDescription" not in plist
    assert plistlib.loads(plistlib.dumps(plist)) == plist
    assert plistlib.loads(plistlib.dumps(cfg.PY2APP_OPTIONS["plist"])) == plist


def test_py2app_options(cfg: ModuleType) -> None:
    opts = cfg.PY2APP_OPTIONS
    assert opts["argv_emulation"] is False
    assert opts["iconfile"] == "resources/Khala.icns" and (ROOT / opts["iconfile"]).is_file()
    assert opts["plist"] is cfg.PLIST and opts["resources"] == cfg.RESOURCES
    for pkg in ["engine", "app", "torch", "numpy", "safetensors", "tokenizers", "huggingface_hub",
                "soundfile", "sounddevice", "yaml", "_soundfile_data", "_sounddevice_data"]:
        assert pkg in opts["packages"], pkg
    for mod in ["PySide6.QtWebEngineCore", "PySide6.Qt3DCore", "PySide6.QtQuick", "PySide6.QtQml",
                "PySide6.QtMultimedia", "tkinter", "matplotlib", "IPython", "pytest"]:
        assert mod in opts["excludes"], mod
    assert {"PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"} <= set(opts["includes"])
    assert not set(opts["includes"]) & set(opts["excludes"])
    assert not set(opts["packages"]) & set(opts["excludes"])
    kwargs = cfg.setup_kwargs()
    assert kwargs["options"] == {"py2app": opts}
    assert [ROOT / s for s in kwargs["app"]] == [ROOT / "packaging" / "khala_main.py"]
    assert (ROOT / kwargs["app"][0]).is_file()


def test_every_listed_resource_exists(cfg: ModuleType) -> None:
    for required in ["resources/tags.json", "resources/model_manifest.json", "resources/icon.png"]:
        assert required in cfg.RESOURCES, required
    missing = [r for r in cfg.RESOURCES if not (ROOT / r).exists()]
    assert not missing, f"listed but missing: {missing}"
    # the .icns goes in through `iconfile`; listing it again would copy it twice
    assert "resources/Khala.icns" not in cfg.RESOURCES
    json.loads((ROOT / "resources" / "tags.json").read_text(encoding="utf-8"))


def test_setup_py_works_without_py2app(tmp_path: Path) -> None:
    """Outside `setup.py py2app`, py2app is never imported: a poisoned py2app on the path is harmless."""
    (tmp_path / "py2app").mkdir()
    (tmp_path / "py2app" / "__init__.py").write_text("raise RuntimeError('py2app imported')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    from engine import __version__
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == __version__


def test_setup_py_metadata_and_entry_points(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    info = tmp_path / "khala.egg-info"
    entry_points = (info / "entry_points.txt").read_text()
    assert "khala = engine.cli:main" in entry_points and "khala-app = app.main:main" in entry_points
    requires = (info / "requires.txt").read_text()
    pyside = next(line for line in requires.splitlines() if line.startswith("PySide6-Essentials"))
    assert "torch>=2.4" in requires and "mutagen>=1.45" in requires and "[test]" in requires
    assert ">=6.6" in pyside and "<6.12" in pyside
    assert (info / "top_level.txt").read_text().split() == ["app", "engine"]


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS refusal")
def test_setup_py_py2app_refuses_off_macos() -> None:
    out = subprocess.run([sys.executable, "setup.py", "py2app"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "macOS only" in out.stderr
    assert not (ROOT / "dist" / "Khala.app").exists()


# --- icon ------------------------------------------------------------------------------

def test_icns_is_valid() -> None:
    data = (ROOT / "resources" / "Khala.icns").read_bytes()
    chunks = parse_icns(data)
    assert set(ICNS_PNG_TYPES) <= set(chunks), sorted(chunks)
    for kind, px in ICNS_PNG_TYPES.items():
        width, height, _ = png_header(chunks[kind])
        assert (width, height) == (px, px), kind


def test_icon_source_is_1024_rgba() -> None:
    assert png_header((ROOT / "resources" / "icon.png").read_bytes()) == (1024, 1024, 6)


def test_pack_icns_layout() -> None:
    make_icon = load(ROOT / "packaging" / "make_icon.py", "khala_make_icon_under_test")
    fake_png = PNG_MAGIC + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 7, 9) + b"\x08\x06\0\0\0"
    data = make_icon.pack_icns({"ic07": fake_png, "ic10": b"xyz"})
    assert parse_icns(data) == {"ic07": fake_png, "ic10": b"xyz"}
    assert len(data) == 8 + (8 + len(fake_png)) + (8 + 3)
    assert make_icon.png_size(fake_png) == (7, 9)
    with pytest.raises(ValueError):
        make_icon.png_size(b"GIF89a" + bytes(30))


def test_make_icon_builds_from_the_source(tmp_path: Path) -> None:
    image_mod = pytest.importorskip("PIL.Image")
    make_icon = load(ROOT / "packaging" / "make_icon.py", "khala_make_icon_under_test")
    out = tmp_path / "Khala.icns"
    make_icon.build(ROOT / "resources" / "icon.png", out)
    chunks = parse_icns(out.read_bytes())
    assert {k: png_header(v)[:2] for k, v in chunks.items()} == {k: (p, p) for k, p in ICNS_PNG_TYPES.items()}
    # the committed .icns was made from the committed source
    committed = parse_icns((ROOT / "resources" / "Khala.icns").read_bytes())
    with image_mod.open(io.BytesIO(committed["ic10"])) as a, image_mod.open(ROOT / "resources" / "icon.png") as b:
        assert a.convert("RGBA").tobytes() == b.convert("RGBA").tobytes()
    small = tmp_path / "small.png"
    image_mod.new("RGBA", (512, 512)).save(small)
    with pytest.raises(ValueError, match="1024"):
        make_icon.build(small, tmp_path / "bad.icns")


# --- build script and workflow ----------------------------------------------------------

def test_build_script_syntax() -> None:
    assert os.access(BUILD_SCRIPT, os.X_OK)
    out = subprocess.run(["bash", "-n", str(BUILD_SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = BUILD_SCRIPT.read_text()
    for needle in ["setup.py py2app", "codesign --force --deep --sign", "--smoke-test",
                   "QT_QPA_PLATFORM=offscreen", "hdiutil create", "dist/Khala.dmg"]:
        assert needle in text, needle


def _stand_in_mac(tmp_path: Path, exe_body: str) -> tuple[Path, dict[str, str]]:
    """A copy of the repo's packaging files plus stand-ins for uname, py2app's python, codesign…"""
    tree, bin_dir = tmp_path / "tree", tmp_path / "bin"
    (tree / "packaging").mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy2(BUILD_SCRIPT, tree / "packaging" / "build_app.sh")
    shutil.copy2(ROOT / "packaging" / "entitlements.plist", tree / "packaging")
    exe = tmp_path / "exe.sh"
    exe.write_text("#!/bin/sh\n" + exe_body)
    tools = {
        "uname": "echo Darwin",
        "fakepython": textwrap.dedent(f"""\
            case "$1" in
              -c) case "$2" in *PIL*) exit 1;; esac; exit 0;;
              setup.py) mkdir -p dist/Khala.app/Contents/MacOS
                        cp {exe} dist/Khala.app/Contents/MacOS/Khala
                        chmod +x dist/Khala.app/Contents/MacOS/Khala
                        echo '<plist/>' > dist/Khala.app/Contents/Info.plist;;
            esac"""),
        "codesign": "exit 0", "plutil": "exit 0", "plistbuddy": "exit 0", "otool": "exit 0",
        "hdiutil": 'if [ "$1" = create ]; then for a; do last=$a; done; echo dmg > "$last"; fi',
    }
    for name, body in tools.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": "fakepython",
           "PLISTBUDDY": str(bin_dir / "plistbuddy"), "SMOKE_TIMEOUT": "20"}
    return tree, env


@pytest.mark.parametrize("exe_body, ok, message", [
    ('case "$1" in --version) echo "Khala 0.1.0";; *) echo "ok   import numpy"; echo "SMOKE OK";; esac\n',
     True, ""),
    ('echo "FAIL import torch: ModuleNotFoundError: No module named torch"; echo "SMOKE FAIL (1 of 20 checks)"; exit 1\n',
     False, "exited with status 1"),
    ('echo "dyld: Library not loaded: @rpath/libtorch_cpu.dylib"; exit 0\n', False, "did not report SMOKE OK"),
    ('sleep 60\n', False, "exited with status"),
])
def test_build_script_smoke_gate(tmp_path: Path, exe_body: str, ok: bool, message: str) -> None:
    tree, env = _stand_in_mac(tmp_path, exe_body)
    env["SMOKE_TIMEOUT"] = "3"
    out = subprocess.run(["bash", str(tree / "packaging" / "build_app.sh")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert (out.returncode == 0) is ok, out.stdout + out.stderr
    assert message in out.stderr
    assert (tree / "dist" / "Khala.dmg").exists() is ok


def test_workflow_builds_on_arm64_and_uploads_the_dmg() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert "jobs" in wf and (True in wf or "on" in wf)  # YAML 1.1 reads a bare `on` as true
    (job,) = wf["jobs"].values()
    assert job["runs-on"] == "macos-14"
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert any(u.startswith("actions/checkout@") for u in uses)
    (py,) = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert str(py["with"]["python-version"]) == "3.11"
    assert "torch==2.13.0" in runs and "py2app" in runs and "pip install -e ." in runs
    assert "packaging/build_app.sh" in runs
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert any(s["with"]["path"] == "dist/Khala.dmg" for s in uploads)


# --- resource_path ---------------------------------------------------------------------

def test_resource_path_from_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.resources import resource_path

    monkeypatch.delenv("RESOURCEPATH", raising=False)
    assert resource_path("tags.json") == ROOT / "resources" / "tags.json"
    assert resource_path("tags.json").is_file()
    assert resource_path() == ROOT / "resources"


def test_resource_path_in_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from app.resources import resource_path

    bundle = tmp_path / "Khala.app" / "Contents" / "Resources"
    monkeypatch.setenv("RESOURCEPATH", str(bundle))
    assert resource_path("tags.json") == bundle / "tags.json"
    assert resource_path("icons", "play.png") == bundle / "icons" / "play.png"


# --- crash hook --------------------------------------------------------------------------

@pytest.fixture()
def hooks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Restores the global hooks afterwards; logs go under tmp_path."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    return tmp_path / "khala" / "logs"


def _raise_and_hook(exc: BaseException) -> None:
    try:
        raise exc
    except BaseException as caught:
        sys.excepthook(type(caught), caught, caught.__traceback__)


def test_crash_hook_logs_and_shows_a_readable_dialog(qapp, hooks: Path, capsys) -> None:
    from app.crash import install_excepthook

    shown: list[tuple[str, str, str]] = []
    install_excepthook(show=lambda *texts: shown.append(texts))
    _raise_and_hook(ValueError("the mixer lost its way\nsecond line"))

    (log,) = hooks.glob("crash-*.log")
    logged = log.read_text()
    assert "Traceback (most recent call last)" in logged and "ValueError: the mixer lost its way" in logged
    assert "_raise_and_hook" in logged
    (title, text, info) = shown[0]
    dialog = "\n".join(shown[0])
    assert "Traceback" not in dialog and 'File "' not in dialog and "second line" not in dialog
    assert "ValueError: the mixer lost its way" in info and str(log) in info
    assert "Khala" in title and "Khala" in text
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(log) in err


def test_crash_hook_worker_thread_dialog_on_gui_thread(qapp, qtbot, hooks: Path) -> None:
    from PySide6.QtCore import QThread

    from app.crash import install_excepthook

    shown: list[bool] = []
    install_excepthook(show=lambda *texts: shown.append(QThread.currentThread() == qapp.thread()))

    def work() -> None:
        raise RuntimeError("worker failed")

    worker = threading.Thread(target=work, name="song-worker")
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: bool(shown), timeout=5000)
    assert shown == [True]
    (log,) = hooks.glob("crash-*.log")
    assert "Thread: song-worker" in log.read_text() and "RuntimeError: worker failed" in log.read_text()


def test_crash_hook_without_qapplication_prints_one_line(tmp_path: Path) -> None:
    code = "from app.crash import install_excepthook\ninstall_excepthook()\nraise KeyError('no such song')\n"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    logs = list(tmp_path.rglob("crash-*.log"))
    assert len(logs) == 1 and "KeyError: 'no such song'" in logs[0].read_text()
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "Traceback" not in out.stderr
    assert str(logs[0]) in out.stderr


def test_log_dir_per_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from app.crash import log_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "darwin")
    assert log_dir() == tmp_path / "Library" / "Logs" / "Khala"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert log_dir() == tmp_path / ".local" / "state" / "khala" / "logs"


# --- --version and --smoke-test ---------------------------------------------------------

def test_app_helpers_do_not_import_torch() -> None:
    code = ("import sys, app.version, app.crash, app.resources, app.smoke\n"
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def test_version_report(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import __version__

    from app import version

    monkeypatch.delenv("KHALA_DEVICE", raising=False)
    report = version.version_report().splitlines()
    assert report[0] == f"Khala {__version__}"
    assert f"PyTorch {importlib.metadata.version('torch')}" in report
    assert any(line.startswith("Python 3.") for line in report)
    (device,) = [line for line in report if line.startswith("Device ")]
    assert device.split()[1] in ("cpu", "cuda", "cuda:0", "mps") and "unavailable" not in device


def test_version_report_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import version

    def no_metadata(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    expected = importlib.metadata.version("torch")
    monkeypatch.setattr(version.importlib.metadata, "version", no_metadata)
    assert version.torch_version() == expected  # read from torch/version.py, as inside the bundle
    monkeypatch.setenv("KHALA_DEVICE", "quantum")
    assert version.device_report().startswith("unavailable (RequestError")


def test_smoke_test_passes_and_fails(qapp) -> None:
    from app.smoke import smoke_test

    good, bad = io.StringIO(), io.StringIO()
    assert smoke_test(modules=["json"], resources=["tags.json"], out=good) == 0
    assert good.getvalue().rstrip().endswith("SMOKE OK")
    assert smoke_test(modules=["json", "no_such_module_for_khala"], resources=["no-such.json"], out=bad) == 1
    text = bad.getvalue()
    assert "FAIL import no_such_module_for_khala: ModuleNotFoundError" in text
    assert "FAIL resource no-such.json" in text and "SMOKE FAIL (2 of" in text


@pytest.mark.parametrize("target", ["engine.cli:main", "app.main:main"])
def test_entry_points_import(target: str) -> None:
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_full_smoke_test_from_source(tmp_path: Path) -> None:
    """What the built bundle runs: every module, resource and native library loads."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path), "KHALA_APP_DATA": str(tmp_path)}
    env.pop("RESOURCEPATH", None)
    out = subprocess.run([sys.executable, "-c", "import sys; from app.smoke import smoke_test; sys.exit(smoke_test())"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and "SMOKE OK" in out.stdout, out.stdout + out.stderr


def test_a_failed_jobs_traceback_goes_to_the_log_file_not_stderr(hooks: Path, capsys) -> None:
    import logging

    from app.crash import install_log_file

    logger = logging.getLogger("app")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    try:
        path = install_log_file()
        assert path == hooks / "khala.log"
        try:
            raise OSError(5, "Input/output error")
        except OSError:
            logging.getLogger("app.jobs").exception("background job failed")
        for handler in logger.handlers:
            handler.flush()
        text = path.read_text(encoding="utf-8")
        assert "ERROR app.jobs: background job failed" in text and "Traceback (most recent call last)" in text
        assert "Traceback" not in capsys.readouterr().err
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            logger.addHandler(handler)
        logger.propagate, logger.level = saved[1], saved[2]
