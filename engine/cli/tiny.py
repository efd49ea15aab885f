"""``khala tiny``: write a tiny random checkpoint, for trying the pipeline without the real weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    tiny = sub.add_parser("tiny", help="write a tiny random checkpoint (for trying the pipeline without weights)")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.testing.tiny import write_tiny_weights
    check_target(args.dir)
    folder = write_tiny_weights(args.dir, seed=args.seed)
    print(f"wrote a tiny random checkpoint to {folder}", file=sys.stderr)
    return 0


def check_target(folder: Path) -> None:
    """OutputError unless ``folder`` is new or holds none of the model's files: a tiny checkpoint
    written over a downloaded model would replace ~8 GB of real weights with random noise."""
    from engine.errors import OutputError
    from engine.weights.folder import ALL_FILES
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"Cannot write a tiny checkpoint to {folder}: it is a file, not a folder.")
    present = [name for name in ALL_FILES if (folder / name).exists()]
    if present:
        raise OutputError(f"{folder} already holds model files ({', '.join(present[:3])}"
                          f"{', …' if len(present) > 3 else ''}); khala tiny would replace them with random "
                          "weights. Give it a new or empty folder.")
