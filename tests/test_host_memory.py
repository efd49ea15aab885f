"""engine.host_memory: freed tensors go back to the OS; big tensors on huge pages (Linux, glibc)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc/Linux settings")

# After one big tensor is freed (glibc then raises its mmap threshold), 30 tensors of 8 MiB are
# made and all but the last freed: how much stays resident?
RETAINED = """
import sys
if sys.argv[1] == "tuned":
    from engine.host_memory import tune_host_memory
    assert tune_host_memory()
import torch
def rss():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')) * 1024
x = torch.ones(24 << 18); del x
base = rss()
keep = [torch.ones(2 << 20) for _ in range(30)]
del keep[:-1]
print(rss() - base)
"""


def _retained(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", RETAINED, mode], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
    return int(out.stdout)


@linux_only
def test_freed_tensors_are_given_back() -> None:
    tuned, default = _retained("tuned"), _retained("default")
    assert tuned < 40 << 20, tuned  # the one kept tensor (8 MiB) and small change
    assert default > tuned + (100 << 20), (default, tuned)  # glibc's default keeps most of the 232 MiB


@linux_only
def test_huge_pages_asked_for_only_when_unset(monkeypatch) -> None:
    from engine import host_memory
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    host_memory.tune_host_memory()
    assert host_memory.os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    host_memory.tune_host_memory()
    assert host_memory.os.environ["THP_MEM_ALLOC_ENABLE"] == "0"


def test_nothing_changed_elsewhere(monkeypatch) -> None:
    from engine import host_memory
    monkeypatch.setattr(host_memory.sys, "platform", "darwin")
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    assert host_memory.tune_host_memory() is False
    assert "THP_MEM_ALLOC_ENABLE" not in host_memory.os.environ


def test_the_khala_command_tunes_before_torch_is_imported() -> None:
    code = ("import sys, engine.host_memory as h; calls = []; real = h.tune_host_memory\n"
            "h.tune_host_memory = lambda: calls.append('torch' in sys.modules) or real()\n"
            "from engine.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(calls)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[False]"
