"""Shared fixtures: a tiny random checkpoint in the exact published format, written once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.testing.tiny import write_tiny_weights
    return write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"), seed=0)


@pytest.fixture()
def tiny_weights_copy(tiny_weights: Path, tmp_path: Path) -> Path:
    """A private copy that a test may damage."""
    import shutil
    dest = tmp_path / "weights"
    shutil.copytree(tiny_weights, dest)
    return dest


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny tensor ops gain nothing from threads, and lose a lot on a busy two-core machine."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
