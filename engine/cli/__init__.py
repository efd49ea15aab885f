"""The ``khala`` command. Each sub-command lives in its own module of this package, which
registers its parser with ``register(subparsers)`` and sets ``handler`` (args → exit code).

Exit codes: 0 done, 1 error (one ``error:`` line on stderr), 2 usage, 130 cancelled (Ctrl-C),
143 cancelled by SIGTERM. A cancel stops the run where it is; temporary files go, and a song
whose save had already committed is completed, never half-written.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
from typing import Sequence

# The MPS seatbelt, before anything imports torch (torch reads it as it loads): an op that Metal
# lacks then runs on the CPU instead of stopping the song, and `khala doctor` names such ops.
# A value the user set is kept.
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

from engine.errors import Cancelled, KhalaError  # noqa: E402

EXIT_ERROR, EXIT_CANCELLED, EXIT_TERMINATED = 1, 130, 143
# Sub-command modules, in the order `khala --help` lists them.
COMMANDS = ("generate", "extend", "prompt", "decode", "doctor", "worker", "tiny")


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised on the main thread like Ctrl-C, so every stage and save cleans up the same way."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise Terminated()


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


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
    from engine.host_memory import tune_host_memory
    tune_host_memory()  # before torch is imported (issue 12: peak memory and page faults on Linux)
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        if args.version:
            code = print_version()
        elif args.command is None:
            parser.print_help(sys.stderr)
            return 2
        else:
            code = int(args.handler(args) or 0)
        sys.stdout.flush()
        return code
    except Terminated:
        print("cancelled", file=sys.stderr)
        return EXIT_TERMINATED
    except (Cancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except KhalaError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `khala prompt … | head -c 1`: the reader has what it wanted
        _quiet_stdout()
        return 0
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:  # Path.exists()/is_file() raise it for a name over 255 bytes
            print(f"error: {_too_long(error)}", file=sys.stderr)
            return EXIT_ERROR
        if error.errno is None or not _is_stdout_error(error):
            raise
        _quiet_stdout()
        print(f"error: cannot write the output: {error.strerror}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _too_long(error: OSError) -> str:
    """One bounded line for ENAMETOOLONG, naming the first path part over the limit."""
    path = str(getattr(error, "filename", None) or "")
    long_parts = [part for part in path.split(os.sep) if len(part.encode()) > 255]
    part = long_parts[0] if long_parts else path
    shown = part if len(part) <= 40 else part[:40] + "…"
    return (f"The name {shown} is {len(part.encode())} bytes; a file or folder name is at most 255 bytes "
            "on this file system.")


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _is_stdout_error(error: OSError) -> bool:
    """An OSError from writing our own output (e.g. > /dev/full), not from a file we were asked to read."""
    return getattr(error, "filename", None) is None


if __name__ == "__main__":
    sys.exit(main())
