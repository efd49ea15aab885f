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
    folder = write_tiny_weights(args.dir, seed=args.seed)
    print(f"wrote a tiny random checkpoint to {folder}", file=sys.stderr)
    return 0
