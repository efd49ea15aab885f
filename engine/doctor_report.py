"""What ``khala doctor`` found, and how it is judged: the report, its thresholds, its wording.

Imports neither torch nor Qt: the app builds its dialog from this module and leaves the probe
(``engine.doctor``, which imports torch) to its worker thread.

Thresholds (``THRESHOLDS``), each with its reason:

* Backbone and super-res cosine of the final hidden states against CPU float32: pass ≥ 0.999,
  fail < 0.995. The port's author measured 0.999998 against real CUDA activations with the
  trained double MLP bias and 0.9938 without it (SPEC §3): a port that misses one bias term
  fails, while half precision (float16 ≈ 0.9999+, bfloat16 ≈ 0.999+ on 24 layers) passes.
* Greedy agreement (teacher-forced: the device predicts each next token from the CPU float32
  reference's own greedy prefix): pass ≥ 30 of 32, fail < 24 of 32. A disagreement whose two
  tokens are less than ``NEAR_TIE_NATS`` apart in the reference's logits is a near-tie (both are
  about equally likely; sampling cannot tell them apart) and counts as agreement for the verdict.
* Decoder audio cosine (the decoder runs in float32 on every device by default): pass ≥ 0.999,
  fail < 0.99.
* Any non-finite value in any layer's output in the chosen dtype: fail (a song would be NaN or
  noise); the report names the first layer and the dtype that stayed finite.
* Ops that fell back to the CPU: warn (correct, as the parity shows, but slow); an op that
  neither runs on the GPU nor falls back: fail.
* Speed: warn when the backbone alone would take longer than ``SLOW_SONG_MINUTES`` for a
  2-minute song at the measured tokens/s.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.errors import OutputError

PASS, WARN, FAIL = "pass", "warn", "fail"

GREEDY_TOKENS = 32
NEAR_TIE_NATS = 0.1
SLOW_SONG_MINUTES = 60.0
# (pass at or above, fail below)
THRESHOLDS: dict[str, tuple[float, float]] = {
    "transformer_cosine": (0.999, 0.995),
    "greedy_agreement": (30 / 32, 24 / 32),
    "decoder_cosine": (0.999, 0.99),
}

# Stage names of the probe's events (engine.events.Stage / Progress), in order, with what the
# app shows for each.
STAGE_LABELS = {
    "machine": "Looking at this machine",
    "verify": "Checking the model files",
    "backbone_reference": "Song model: reference on the CPU in float32",
    "backbone_device": "Song model: on this device",
    "speed": "Song model: measuring speed",
    "superres_reference": "Detail model: reference on the CPU in float32",
    "superres_device": "Detail model: on this device",
    "decoder_reference": "Audio decoder: reference on the CPU in float32",
    "decoder_device": "Audio decoder: on this device",
    "safe_dtype": "Looking for a precision that stays finite",
}

# torch's one warning per op when PYTORCH_ENABLE_MPS_FALLBACK=1 (aten/src/ATen/mps/MPSFallback.mm).
FALLBACK_PATTERN = re.compile(r"The operator '([^']+)' is not currently supported on the MPS backend "
                              r"and will fall back to run on the CPU")
# torch's error for an op that MPS lacks while the fallback is off.
UNSUPPORTED_PATTERN = re.compile(r"The operator '([^']+)' is not currently implemented for the MPS device")


def fallback_ops_in(messages: Iterable[str]) -> list[str]:
    """The operator names of torch's MPS CPU-fallback warnings among ``messages``, first seen first."""
    ops: list[str] = []
    for text in messages:
        for name in FALLBACK_PATTERN.findall(str(text)):
            if name not in ops:
                ops.append(name)
    return ops


@dataclass
class Check:
    name: str
    status: str  # PASS, WARN or FAIL
    detail: str


@dataclass
class Parity:
    """One model on the chosen device and dtype against the same model computed in CPU float32.

    ``cosine`` and ``max_abs_err`` are over every final hidden state of the probe (for the
    decoder: every audio sample); ``matches`` of ``compared`` greedy predictions agree, and
    ``near_ties`` more disagree only between two near-equal candidates."""

    cosine: float | None = None
    max_abs_err: float | None = None
    compared: int = 0
    matches: int = 0
    near_ties: int = 0

    @property
    def agreement(self) -> float | None:
        return self.matches / self.compared if self.compared else None

    @property
    def tolerant_agreement(self) -> float | None:
        return (self.matches + self.near_ties) / self.compared if self.compared else None


def _finite_or_none(value: float | None, digits: int = 7) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def grade_transformer(name: str, p: Parity, dtype: str) -> Check:
    """pass / warn / fail for a backbone or super-res parity, with the numbers in plain words."""
    cos_pass, cos_fail = THRESHOLDS["transformer_cosine"]
    agree_pass, agree_fail = THRESHOLDS["greedy_agreement"]
    if p.cosine is None or not math.isfinite(p.cosine):
        return Check(name, FAIL, f"the {dtype} run produced non-finite values, so it cannot match float32")
    words = f"cosine {p.cosine:.6f}, max abs error {p.max_abs_err:.4g} vs CPU float32"
    if p.compared:
        words += f"; greedy {p.matches}/{p.compared} agree"
        if p.near_ties:
            words += f" (+{p.near_ties} near-ties under {NEAR_TIE_NATS} nats)"
    agree = p.tolerant_agreement if p.compared else 1.0
    if p.cosine < cos_fail or agree < agree_fail:
        return Check(name, FAIL, f"{words}: this device computes something else than the model "
                                 f"(pass needs cosine ≥ {cos_pass}, greedy ≥ {agree_pass:.0%})")
    if p.cosine < cos_pass or agree < agree_pass:
        return Check(name, WARN, f"{words}: close, but less exact than half precision should be")
    return Check(name, PASS, words)


def grade_decoder(p: Parity) -> Check:
    cos_pass, cos_fail = THRESHOLDS["decoder_cosine"]
    if p.cosine is None or not math.isfinite(p.cosine):
        return Check("decoder parity", FAIL, "the decoder produced non-finite audio")
    words = f"audio cosine {p.cosine:.6f}, max abs error {p.max_abs_err:.4g} vs CPU float32"
    if p.cosine < cos_fail:
        return Check("decoder parity", FAIL, f"{words}: the audio would differ audibly")
    if p.cosine < cos_pass:
        return Check("decoder parity", WARN, f"{words}: slightly off")
    return Check("decoder parity", PASS, words)


_ABS_PATH = re.compile(r"(?<![\w.~-])(?:~|[A-Za-z]:)?[/\\](?:[^\s'\"`,;()]*[^\s'\"`,;().:])?")


def scrub(text: str, weights_dir: Path | None = None) -> str:
    """``text`` with the weights folder shortened to its name and any other absolute path to
    ``…/`` plus its last part, so a report holds no user paths."""
    if weights_dir is not None:
        name = Path(weights_dir).name or "weights"
        for form in sorted({str(weights_dir), str(Path(weights_dir).expanduser().resolve())}, key=len, reverse=True):
            if len(form) > 1:
                text = text.replace(form, name)
    return _ABS_PATH.sub(lambda m: "…/" + re.split(r"[/\\]", m.group(0))[-1], text)


@dataclass
class DoctorReport:
    """Everything the probe found; ``to_dict()`` is the ``--json`` object (its keys are stable)."""

    device: str
    dtype: str
    decoder_dtype: str = "float32"
    quick: bool = False
    weights_folder: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    parity: dict[str, Parity] = field(default_factory=dict)  # "backbone", "superres", "decoder"
    nonfinite_layers: list[str] = field(default_factory=list)
    safe_dtype: str | None = None
    fallback_ops: list[str] = field(default_factory=list)
    tokens_per_s: float | None = None
    peak_memory_gb: float | None = None

    def add(self, name: str, status: str, detail: str) -> Check:
        check = Check(name, status, detail)
        self.checks.append(check)
        return check

    @property
    def nonfinite(self) -> bool:
        return bool(self.nonfinite_layers)

    @property
    def verdict(self) -> str:
        statuses = {c.status for c in self.checks}
        return FAIL if FAIL in statuses or not self.checks else WARN if WARN in statuses else PASS

    @property
    def summary(self) -> str:
        """The verdict in plain words."""
        where = f"{self.device} in {self.dtype}"
        bad = [c for c in self.checks if c.status == FAIL]
        if bad:
            return (f"FAIL: do not trust songs made on {where}. "
                    + "; ".join(f"{c.name}: {c.detail.rstrip('.')}" for c in bad[:3]) + ".")
        warns = [c for c in self.checks if c.status == WARN]
        if warns:
            return (f"WARN: songs on {where} will be right, but: "
                    + "; ".join(f"{c.name}: {c.detail.rstrip('.')}" for c in warns[:3]) + ".")
        return f"PASS: this machine computes what the model computes on {where}."

    def to_dict(self) -> dict[str, Any]:
        def side(name: str) -> Parity:
            return self.parity.get(name) or Parity()

        bb, sr, dec = side("backbone"), side("superres"), side("decoder")
        return {
            "device": self.device,
            "dtype": self.dtype,
            "decoder_dtype": self.decoder_dtype,
            "verdict": self.verdict,
            "summary": self.summary,
            "quick": self.quick,
            "parity": {
                "backbone_cosine": _finite_or_none(bb.cosine),
                "backbone_max_abs_err": _finite_or_none(bb.max_abs_err),
                "greedy_agreement": _finite_or_none(bb.agreement, 4),
                "greedy_tokens": bb.compared,
                "greedy_matches": bb.matches,
                "greedy_near_ties": bb.near_ties,
                "superres_cosine": _finite_or_none(sr.cosine),
                "superres_max_abs_err": _finite_or_none(sr.max_abs_err),
                "superres_agreement": _finite_or_none(sr.agreement, 4),
                "decoder_cosine": _finite_or_none(dec.cosine),
                "decoder_max_abs_err": _finite_or_none(dec.max_abs_err),
            },
            "nonfinite": self.nonfinite,
            "nonfinite_layers": list(self.nonfinite_layers),
            "safe_dtype": self.safe_dtype,
            "fallback_ops": list(self.fallback_ops),
            "tokens_per_s": _finite_or_none(self.tokens_per_s, 2),
            "peak_memory_gb": _finite_or_none(self.peak_memory_gb, 3),
            "checks": [asdict(c) for c in self.checks],
            "machine": dict(self.machine),
            "weights_folder": self.weights_folder,
            "thresholds": {k: {"pass": v[0], "fail_below": v[1]} for k, v in THRESHOLDS.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False, allow_nan=False)

    def to_text(self) -> str:
        """The report a person reads (and attaches to a bug report)."""
        m = self.machine
        lines = [f"Khala doctor: {self.verdict.upper()}", self.summary, "",
                 f"device {self.device}, dtype {self.dtype}, decoder {self.decoder_dtype}"
                 + (" (quick check)" if self.quick else "")]
        if m:
            lines.append("machine: " + ", ".join(f"{k.replace('_gb', '')} {v}{' GB' if k.endswith('_gb') else ''}"
                                                 for k, v in m.items()))
        if self.weights_folder:
            lines.append(f"weights folder: {self.weights_folder}")
        lines.append("")
        for c in self.checks:
            lines.append(f"[{c.status}] {c.name}: {c.detail}")
        if self.nonfinite_layers:
            lines.append("non-finite layers: " + ", ".join(self.nonfinite_layers))
        if self.fallback_ops:
            lines.append("ops run on the CPU: " + ", ".join(self.fallback_ops))
        return "\n".join(lines) + "\n"


def save_report(report: DoctorReport, path: Path | str) -> None:
    """Write the report atomically: the JSON object when ``path`` ends in .json, else the text.
    Raises OutputError (one line) when it cannot be written; an existing file is kept then."""
    path = Path(path)
    text = report.to_json() + "\n" if path.suffix.lower() == ".json" else report.to_text()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputError(f"Cannot write the report {path.name}: {error.strerror or error}.") from None
