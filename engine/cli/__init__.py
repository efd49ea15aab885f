"""The ``khala`` command. Each sub-command lives in its own module of this package, which
registers its parser with ``register(subparsers)`` and sets ``handler`` (args → exit code).

Exit codes: 0 done, 1 error (one ``error:`` line on stderr), 2 usage, 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from engine.errors import Cancelled, KhalaError

EXIT_ERROR, EXIT_CANCELLED = 1, 130
# Sub-command modules, in the order `khala --help` lists them.
COMMANDS = ("generate", "prompt", "decode", "tiny")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="khala", description="Write songs with the Khala music model.")
    parser.add_argument("--version", action="store_true", help="print versions and the device, then exit")
    sub = parser.add_subparsers(dest="command")
    for name in COMMANDS:
        importlib.import_module(f"engine.cli.{name}").register(sub)
    from engine.weights.cli import register as register_weights
    register_weights(sub)
    return parser


def print_version() -> int:
    import torch

    import engine
    from engine.device import dtype_name, pick_device, pick_dtype
    device = pick_device()
    print(f"khala {engine.__version__}  torch {torch.__version__}  device {device} ({dtype_name(pick_dtype(device))})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from engine.host_memory import tune_host_memory
    tune_host_memory()  # before torch is imported (issue 12: peak memory and page faults on Linux)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.version:
            return print_version()
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return int(args.handler(args) or 0)
    except (Cancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except KhalaError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
