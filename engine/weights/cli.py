"""``khala weights download | verify | path``: argparse wiring and handlers.

``engine.cli`` calls ``register(subparsers)``; each sub-command sets ``handler``.
``main(argv)`` runs the same commands on their own (exit 0 ok, 1 error, 130 cancelled).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

from engine.errors import WeightsError

EXIT_OK = 0


def register(subparsers: argparse._SubParsersAction) -> None:
    weights = subparsers.add_parser("weights", help="download, verify or locate the model weights")
    sub = weights.add_subparsers(dest="weights_command", metavar="{download,verify,path}")
    sub.required = True

    dl = sub.add_parser("download", help="fetch the model (resumes; verifies size and SHA-256)")
    _add_dir(dl)
    dl.add_argument("--repo", default=None, help="Hub repository id (default: from the model manifest)")
    dl.add_argument("--revision", default=None, help="branch, tag or commit (default: from the manifest)")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    dl.set_defaults(handler=cmd_weights_download)

    ver = sub.add_parser("verify", help="check every file's presence, structure and hash")
    _add_dir(ver)
    ver.add_argument("--quick", action="store_true", help="skip hashing (structure and sizes only)")
    ver.set_defaults(handler=cmd_weights_verify)

    path = sub.add_parser("path", help="print the weights folder and its state")
    _add_dir(path)
    path.set_defaults(handler=cmd_weights_path)


def _add_dir(p: argparse.ArgumentParser) -> None:
    help_ = "weights folder (default: $KHALA_WEIGHTS or the app-data folder)"
    p.add_argument("folder", type=Path, nargs="?", default=None, metavar="DIR", help=help_)
    p.add_argument("--dir", type=Path, default=None, metavar="DIR", help="the same, as an option")


def _folder(args: argparse.Namespace) -> Path:
    """The folder given as ``DIR`` or ``--dir DIR`` (not two different ones), else the default."""
    from engine.weights.folder import default_weights_dir
    given = {p.expanduser() for p in (args.folder, args.dir) if p is not None}
    if len(given) > 1:
        raise WeightsError(f"Two weights folders given ({args.folder} and --dir {args.dir}); give one.")
    return given.pop() if given else default_weights_dir().expanduser()


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class DownloadBar:
    """Bar, bytes, rate, ETA, current file: one rewritten line on a terminal; on a file or pipe,
    a plain line per tenth of the bytes and per phase (download, verify)."""

    def __init__(self, stream: TextIO | None = None, width: int = 24) -> None:
        self.stream, self.width, self.dirty = stream or sys.stderr, width, False
        isatty = getattr(self.stream, "isatty", None)
        self.redraw = bool(isatty and isatty())
        self.last: tuple[str, int] | None = None  # (phase, tenth) of the last plain line

    def __call__(self, p) -> None:  # p: engine.weights.download.DownloadProgress
        total = max(p.bytes_total, 1)
        if not self.redraw:
            mark = (p.phase, min(10, 10 * p.bytes_done // total))
            if mark == self.last:
                return
            self.last = mark
        filled = int(self.width * min(p.bytes_done / total, 1.0))
        what = "verifying " if p.phase == "verify" else ""
        line = (f"  [{'#' * filled}{'.' * (self.width - filled)}] {_fmt_bytes(p.bytes_done)} / "
                f"{_fmt_bytes(p.bytes_total)}  {_fmt_bytes(p.rate_bytes_per_s)}/s  ETA {_fmt_eta(p.eta_s)}  "
                f"{what}{p.file}")
        self.stream.write(f"\r{line}\033[K" if self.redraw else f"{line}\n")
        self.stream.flush()
        self.dirty = self.redraw

    def end(self) -> None:
        if self.dirty:
            self.stream.write("\n")
            self.dirty = False


def cmd_weights_download(args: argparse.Namespace) -> int:
    from engine.weights.download import download_weights
    from engine.weights.folder import required_download_bytes
    from engine.weights.manifest import download_size_text

    folder = _folder(args)
    bar = None if args.quiet else DownloadBar()
    if bar is not None:
        print(f"Weights folder: {folder} ({download_size_text(required_download_bytes(folder))} to fetch)",
              file=sys.stderr)
    started = time.monotonic()
    try:
        paths = download_weights(folder, repo=args.repo, revision=args.revision, on_progress=bar)
    finally:
        if bar is not None:
            bar.end()
    print(f"ready: {paths.backbone.parent} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return EXIT_OK


def cmd_weights_verify(args: argparse.Namespace) -> int:
    from engine.weights.folder import ALL_FILES, verify_weights

    folder = _folder(args)
    if not folder.is_dir():
        raise WeightsError(f"No weights folder at {folder}; `khala weights download --dir {folder}` fetches the model.")
    last = [0.0]

    def show(name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.2 or done == total:
            last[0] = now
            print(f"\r  hashing {_fmt_bytes(done)} / {_fmt_bytes(total)}  {name}\033[K", end="", file=sys.stderr)

    report = verify_weights(folder, full=not args.quick, on_progress=show)
    if report.hashed:
        print(file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not report.ok:
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
        raise WeightsError(f"{len(report.problems)} problem(s) in {folder}; "
                           f"`khala weights download --dir {folder}` repairs them.")
    how = f"{len(report.hashed)} hashed" if report.hashed else "structure only"
    print(f"ok: {len(ALL_FILES)} files in {folder} ({how})")
    return EXIT_OK


def cmd_weights_path(args: argparse.Namespace) -> int:
    from engine.weights.folder import weights_status

    folder = _folder(args)
    status = weights_status(folder)
    print(folder, flush=True)  # before the status on stderr, even into one pipe
    print(f"{status}: {status.detail}", file=sys.stderr)
    return EXIT_OK
