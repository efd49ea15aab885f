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
    parser.add_argument("--version", action="store_true",
                        help="print the Khala, Python, Qt and PyTorch versions and the device, then exit")
    sub = parser.add_subparsers(dest="command")
    for name in COMMANDS:
        importlib.import_module(f"engine.cli.{name}").register(sub)
    from engine.weights.cli import register as register_weights
    register_weights(sub)
    return parser


def print_version() -> int:
    """The lines the README promises, as ``Khala --version`` prints them: Khala, Python, Qt (from
    package metadata: the command line never loads Qt), PyTorch, the device songs will use, System."""
    import importlib.metadata
    import platform

    import torch

    import engine
    from engine.device import dtype_name, pick_device, pick_dtype
    qt = "not installed"
    for dist in ("PySide6", "PySide6_Essentials"):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        qt = f"{version} (PySide6 {version}; the command line does not load it)"
        break
    device = pick_device()
    print("\n".join([
        f"Khala {engine.__version__}",
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        f"Qt {qt}",
        f"PyTorch {torch.__version__}",
        f"Device {device} ({dtype_name(pick_dtype(device))})",
        f"System {platform.platform()}",
    ]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
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
