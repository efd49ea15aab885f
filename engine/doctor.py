"""``khala doctor``'s probe: does this machine, on this device and dtype, compute what the model computes?

``run_doctor(weights_dir, device, dtype, quick=, cancel=)`` is a generator: it yields
engine.events Stage / Progress / Log events while it works (stage names: engine.doctor_report.
STAGE_LABELS) and, last, one ``DoctorReport``. Cancel through the CancelToken (checked at every
decode step, pass and stage); a cancelled probe raises Cancelled and yields no report.

What it does (1 and 2 here, the rest in engine.doctor_models), one model resident at a time (each freed before the next loads; the float32
reference keeps its weights in the file's dtype and widens one layer at a time, so the probe
stays within a song's memory, see engine.doctor_probes):

1. the machine (chip, OS, memory, torch, MPS/CUDA) and, on MPS, the CPU-fallback seatbelt;
2. the weights, as ``khala weights verify`` checks them (``quick``: structure and sizes, no hashing);
3. the backbone: a fixed instrumental prompt (no user text) prefilled and 32 greedy tokens decoded
   on the CPU in float32, then the same on the device/dtype teacher-forced on those tokens: cosine
   and max abs error of every final hidden state, greedy agreement; then decode tokens/s at
   position ~1 k (engine.doctor_probes.decode_speed);
4. super-res: its last pass (codebook 63, every column filled) over 32 seeded random frames;
5. the decoder: 32 seeded random frames of codes, in the decoder's dtype;
6. non-finite values in any module's output on the device (forward hooks), and, if there are
   any, the first of bfloat16 / float32 in which that model stays finite;
7. the ops that fell back to the CPU; the process's peak memory.

Thresholds and wording: engine.doctor_report.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import engine
from engine import device as dev
from engine.doctor_models import ModelProbe
from engine.doctor_report import FAIL, PASS, WARN, DoctorReport, scrub
from engine.errors import KhalaError
from engine.events import CancelToken, Event, Outcome, Stage
from engine.weights.folder import default_weights_dir, locate_weights, verify_steps

GIB = 1024**3


def run_doctor(weights_dir: Path | str | None = None, device: str | None = None, dtype: str | None = None, *,
               quick: bool = False, cancel: CancelToken | None = None) -> Iterator[Event | DoctorReport]:
    """Events while probing, then the DoctorReport (see the module docstring)."""
    cancel = cancel or CancelToken()
    folder = Path(weights_dir or default_weights_dir()).expanduser()
    yield Stage("machine")
    machine = machine_info()
    report = DoctorReport(device=device or "auto", dtype=dtype or "auto", quick=quick,
                          weights_folder=folder.name, machine=machine)
    try:
        device_ = dev.pick_device(device)
        dtype_ = dev.pick_dtype(device_, dtype)
        decoder_dtype = dev.pick_decoder_dtype()
    except KhalaError as error:
        report.add("device", FAIL, str(error))
        yield report
        return
    report.device, report.dtype = str(device_), dev.dtype_name(dtype_)
    report.decoder_dtype = dev.dtype_name(decoder_dtype)
    report.add("machine", *machine_check(machine, device_))
    if device_.type == "mps":
        report.add("cpu fallback", *seatbelt_check())
    cancel.check()
    paths = yield from _weights(report, folder, quick, cancel)
    if paths is None:
        yield report
        return
    probe = ModelProbe(report, paths, device_, dtype_, decoder_dtype, cancel, quick)
    yield from probe.run()
    yield report


def doctor_report(weights_dir: Path | str | None = None, device: str | None = None, dtype: str | None = None, *,
                  quick: bool = False, cancel: CancelToken | None = None,
                  on_event: Callable[[Event], None] | None = None) -> DoctorReport:
    """Run the probe to its end and return the report (events go to ``on_event``)."""
    for item in run_doctor(weights_dir, device, dtype, quick=quick, cancel=cancel):
        if isinstance(item, DoctorReport):
            return item
        if on_event is not None:
            on_event(item)
    raise RuntimeError("the probe ended without a report")


# -- the machine ---------------------------------------------------------------------------------
def _chip() -> str:
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                 text=True, timeout=5)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _os_version() -> str:
    if sys.platform == "darwin":
        return f"macOS {platform.mac_ver()[0]} ({platform.machine()})"
    return f"{platform.system()} {platform.release()} ({platform.machine()})"


def _mps_state() -> str:
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_built():
        return "not built into this torch"
    return "available" if backend.is_available() else "built, but not available"


def machine_info() -> dict[str, Any]:
    """Chip, OS, memory, versions and accelerators: no host name, user name or path."""
    from engine.memory import total_memory_bytes

    memory = total_memory_bytes()
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    return {"chip": _chip(), "os": _os_version(), "memory_gb": round(memory / GIB, 1) if memory else None,
            "python": platform.python_version(), "torch": torch.__version__, "khala": engine.__version__,
            "mps": _mps_state(), "cuda": cuda,
            "mps_fallback": os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK", "unset")}


def machine_check(machine: dict[str, Any], device: torch.device) -> tuple[str, str]:
    words = (f"{machine['chip']}, {machine['os']}, {machine['memory_gb']} GB, torch {machine['torch']}, "
             f"MPS {machine['mps']}, CUDA {machine['cuda']}")
    apple_silicon = sys.platform == "darwin" and platform.machine() == "arm64"
    if apple_silicon and device.type == "cpu" and machine["mps"] != "available":
        return WARN, f"{words}: Metal (MPS) is not available, so songs run on the CPU (very slowly)"
    return PASS, words


def seatbelt_check() -> tuple[str, str]:
    value = os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK")
    if value == "1":
        return PASS, "PYTORCH_ENABLE_MPS_FALLBACK=1: an op MPS lacks runs on the CPU instead of stopping the song"
    return WARN, (f"PYTORCH_ENABLE_MPS_FALLBACK is {value!r}: an op MPS lacks stops a song with an error "
                  "(khala and the app set it to 1 unless you set it yourself)")


# -- the weights ---------------------------------------------------------------------------------
def _weights(report: DoctorReport, folder: Path, quick: bool, cancel: CancelToken) -> Iterator[Event]:
    """Verify as ``khala weights verify`` (``--quick`` when ``quick``); returns the paths or None."""
    yield Stage("verify")
    steps = Outcome(verify_steps(folder, full=not quick))
    for event in steps:
        cancel.check()
        yield event
    checked = steps.result
    if not checked.ok:
        problems = "; ".join(checked.problems[:4])
        report.add("weights", FAIL, scrub(f"{len(checked.problems)} problem(s): {problems}. "
                                          "`khala weights download` repairs them", folder))
        return None
    how = (f"{len(checked.hashed)} files hashed" if checked.hashed else
           "structure and sizes only (quick)" if quick else "structure and sizes; no recorded hashes to compare")
    unverified = f"; {len(checked.notes)} not yet verified against the Hub" if checked.notes else ""
    report.add("weights", PASS, f"all files present and whole ({how}{unverified})")
    try:
        return locate_weights(folder)
    except KhalaError as error:
        report.add("weights", FAIL, scrub(str(error), folder))
        return None


