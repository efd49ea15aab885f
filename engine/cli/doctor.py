"""``khala doctor``: check that this machine, on its device and dtype, computes what the model computes.

Prints the verdict in plain words (or, with ``--json``, one JSON object: engine.doctor_report.
DoctorReport.to_dict) on stdout, progress on stderr. Exit 0 on pass or warn, 1 on fail.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.errors import OutputError

EXIT_FAIL = 1


def register(sub: argparse._SubParsersAction) -> None:
    doc = sub.add_parser("doctor", help="check that this machine computes what the model computes",
                         description="Run the model's parity, numerics, fallback, speed and memory probe "
                                     "on this machine and say whether songs made here can be trusted.")
    doc.add_argument("--weights", type=Path, default=None, metavar="DIR",
                     help="weights folder (default: $KHALA_WEIGHTS or the app-data folder)")
    doc.add_argument("--device", default=None, help="auto, mps, cuda or cpu (env KHALA_DEVICE)")
    doc.add_argument("--dtype", default=None, help="auto, float32, float16 or bfloat16 (env KHALA_DTYPE)")
    doc.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    doc.add_argument("--out", type=Path, default=None, metavar="REPORT",
                     help="also write the report to this file (JSON if it ends in .json, else text); "
                          "it holds no paths beyond the weights folder's name")
    doc.add_argument("--quick", action="store_true",
                     help="check the weights' structure and sizes without hashing them, and time fewer tokens")
    doc.set_defaults(handler=run)


def check_report_path(path: Path) -> None:
    """Fail before the probe when the report cannot be written there."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"Cannot write the report to {path}: it is a folder.")
    if not folder.is_dir():
        raise OutputError(f"Cannot write the report {path}: folder {folder} does not exist.")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"Cannot write the report {path}: folder {folder} is not writable.")


def run(args: argparse.Namespace) -> int:
    from engine.cli.progress_bar import ProgressBar
    from engine.doctor import doctor_report
    from engine.doctor_report import FAIL, STAGE_LABELS, save_report
    from engine.events import Log, Progress, Stage

    if args.out is not None:
        check_report_path(args.out)
    bar = ProgressBar(sys.stderr)  # the stream of now (a test may have replaced it)

    def show(event: object) -> None:
        if isinstance(event, Stage):
            bar.stage_started(STAGE_LABELS.get(event.name, event.name))
        elif isinstance(event, Progress) and event.total > 1:
            bar.update(event.done, event.total)
        elif isinstance(event, Log):
            bar.log(event.text)

    try:
        report = doctor_report(args.weights, args.device, args.dtype, quick=args.quick, on_event=show)
    finally:
        bar.finish_line()
    if args.out is not None:
        save_report(report, args.out)
    if args.json:
        print(report.to_json())
    else:
        print(report.to_text(), end="")
    return EXIT_FAIL if report.verdict == FAIL else 0
