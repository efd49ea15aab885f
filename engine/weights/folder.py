"""The weights folder: the six published files plus ``tokenizer.json``.

Where it lives, whether it is complete, and whether each file is intact. Imports neither torch
nor the network stack (``engine.weights.download`` fetches), so the app can call it at start-up.

Integrity rests on ``.khala-verified.json`` in the folder: a file is listed there only after its
size and SHA-256 (or git SHA-1) matched the Hub's metadata. ``locate_weights`` stays fast (no
hashing): it checks presence, sizes against that record, and each file's structure. Every file is
untrusted and read with the caps of ``engine.untrusted``; ``engine.weights.preflight`` goes on to
match the configs against the weight files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Generator, Iterable

from engine.errors import PromptError, WeightsError
from engine.events import VERIFY, Outcome, Progress, drain
from engine.untrusted import (DECODER_CONFIG_BYTES, MEGATRON_ARGS_BYTES, RECORD_BYTES, TOKENIZER_JSON_BYTES, Refused,
                              load_json, load_yaml)
from engine.weights.manifest import TOKENIZER_FILE, WEIGHT_FILES, download_size_text, load_manifest
from engine.weights.tensor_tables import safetensors_table, torch_archive_table

ALL_FILES = WEIGHT_FILES + (TOKENIZER_FILE,)
RECORD_FILE = ".khala-verified.json"
PARTIAL_DIR = ".khala-partial"

HASH_BLOCK = 4 << 20


# -- where -----------------------------------------------------------------------------------------
def default_weights_dir() -> Path:
    """``$KHALA_WEIGHTS``, else the platform's per-user application-data folder."""
    env = os.environ.get("KHALA_WEIGHTS")
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "Khala" / "weights"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / "Khala" / "weights"
    data = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(data) / "Khala" / "weights"  # the app's data folder (app.paths.APP_NAME)


@dataclass(frozen=True)
class WeightPaths:
    backbone: Path
    backbone_args: Path
    superres: Path
    superres_args: Path
    decoder: Path
    decoder_config: Path
    tokenizer: Path

    @classmethod
    def in_folder(cls, folder: Path) -> "WeightPaths":
        return cls(*(folder / name for name in ALL_FILES))

    def all(self) -> tuple[Path, ...]:
        return (self.backbone, self.backbone_args, self.superres, self.superres_args,
                self.decoder, self.decoder_config, self.tokenizer)


# -- the verification record -------------------------------------------------------------------
def read_record(folder: Path) -> dict[str, Any]:
    """The record (at most RECORD_BYTES); an unreadable or malformed one counts as empty."""
    try:
        data = load_json(Path(folder) / RECORD_FILE, RECORD_BYTES)
    except (OSError, Refused):
        return {"files": {}}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {"files": {}}
    return {**data, "files": {k: v for k, v in files.items() if isinstance(v, dict)}}


def write_record(folder: Path, record: dict[str, Any]) -> None:
    path = Path(folder) / RECORD_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)


def record_file(folder: Path, name: str, **entry: Any) -> None:
    """Mark ``folder/name`` as verified, keyed by its current size and mtime."""
    st = (Path(folder) / name).stat()
    record = read_record(folder)
    record["files"][name] = {**entry, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    write_record(folder, record)


def forget_file(folder: Path, name: str) -> None:
    record = read_record(folder)
    if record["files"].pop(name, None) is not None:
        write_record(folder, record)


def is_recorded(folder: Path, name: str, record: dict[str, Any] | None = None) -> bool:
    """Verified earlier and unchanged since (same size and mtime)."""
    entry = (record or read_record(folder))["files"].get(name)
    try:
        st = (Path(folder) / name).stat()
    except OSError:
        return False
    return bool(entry) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns


# -- structural checks (fast: headers only) -------------------------------------------------------
def _check_safetensors(path: Path) -> str | None:
    safetensors_table(path)
    return None


def _check_torch_zip(path: Path) -> str | None:
    torch_archive_table(path)
    return None


def _check_json_object(path: Path) -> str | None:
    return None if isinstance(load_json(path, MEGATRON_ARGS_BYTES), dict) else "not a JSON object"


def _check_yaml(path: Path) -> str | None:
    return None if isinstance(load_yaml(path, DECODER_CONFIG_BYTES), dict) else "not a YAML mapping"


def check_tokenizer_json(path: Path, *, full: bool = False) -> str | None:
    """A Llama-3 byte-level BPE: 128000 BPE entries and known ids. ``full`` also runs ``tokenizers``."""
    st = Path(path).stat()
    return _tokenizer_problem(os.path.realpath(path), st.st_size, st.st_mtime_ns, full)


@lru_cache(maxsize=32)
def _tokenizer_problem(path_str: str, size: int, mtime_ns: int, full: bool) -> str | None:
    from engine.prompt.tokenizer import Tokenizer, bpe_problem

    try:
        data = load_json(path_str, TOKENIZER_JSON_BYTES)
    except Refused as error:
        return f"not a tokenizer.json ({error})"
    problem = bpe_problem(data) if isinstance(data, dict) else "top level is not an object"
    if problem is not None or not full:
        return problem
    try:
        Tokenizer.from_file(path_str)  # also encodes a probe with the tokenizers library
    except PromptError as error:
        return str(error)
    return None


_CHECKS: dict[str, Callable[[Path], str | None]] = {
    "khala_backbone.safetensors": _check_safetensors,
    "khala_superres.safetensors": _check_safetensors,
    "backbone_megatron_args.json": _check_json_object,
    "superres_megatron_args.json": _check_json_object,
    "decoder_weights.pt": _check_torch_zip,
    "decoder_config.yaml": _check_yaml,
    TOKENIZER_FILE: check_tokenizer_json,
}


def check_file(path: Path, name: str | None = None) -> str | None:
    """One line on what is wrong with a weight file, or None. Reads headers only, each size capped."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        return _CHECKS[name or path.name](path)
    except Refused as error:
        return str(error)
    except OSError as error:
        return f"cannot read it ({error.strerror or error})"


def _recorded_size_problem(folder: Path, name: str, record: dict[str, Any]) -> str | None:
    entry = record["files"].get(name)
    if not entry:
        return None
    size = (folder / name).stat().st_size
    if entry.get("size") != size:
        return f"{size:,} bytes, but {entry.get('size'):,} were verified: changed or truncated"
    return None


# -- locate, verify, status ---------------------------------------------------------------------
def _missing(folder: Path) -> list[str]:
    return [n for n in ALL_FILES if not (folder / n).is_file()]


def _join(items: Iterable[str]) -> str:
    return ", ".join(items)


def locate_weights(folder: Path | str) -> WeightPaths:
    """The seven files of ``folder``, checked to be present and structurally whole; else WeightsError."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise WeightsError(f"No weights folder at {folder}. Run `khala weights download` to fetch the model.")
    missing = _missing(folder)
    if missing:
        raise WeightsError(f"The weights folder {folder} is missing {len(missing)} of {len(ALL_FILES)} files: "
                           f"{_join(missing)}. Run `khala weights download --dir {folder}` to fetch them.")
    record = read_record(folder)
    problems = []
    for name in ALL_FILES:
        problem = _recorded_size_problem(folder, name, record) or check_file(folder / name)
        if problem:
            problems.append(f"{name}: {problem}")
    if problems:
        raise WeightsError(f"Damaged weight files in {folder}: {'; '.join(problems)}. "
                           f"Run `khala weights download --dir {folder}` to repair them.")
    return WeightPaths.in_folder(folder)


@dataclass
class VerifyReport:
    folder: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hashed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def digest_steps(path: Path, *, git_sha1: bool = False) -> Generator[int, None, tuple[str, str | None]]:
    """Hash a file, yielding the bytes of each block read; returns (sha256, git blob sha1 or None)."""
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % path.stat().st_size) if git_sha1 else None
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            sha256.update(block)
            if sha1 is not None:
                sha1.update(block)
            yield len(block)
    return sha256.hexdigest(), sha1.hexdigest() if sha1 is not None else None


def file_digests(path: Path, *, git_sha1: bool = False,
                 on_bytes: Callable[[int], None] | None = None) -> tuple[str, str | None]:
    """(sha256, git blob sha1 or None) of a file, read once; ``on_bytes(n)`` after each block."""
    return drain(digest_steps(path, git_sha1=git_sha1), on_bytes)


def verify_steps(folder: Path | str | None = None, *,
                 full: bool = True) -> Generator[Progress, None, VerifyReport]:
    """Check every file: presence, structure, recorded size and (``full``) the recorded hash,
    yielding Progress(verify, bytes hashed, bytes to hash, file name) as it hashes.

    A file whose hash no longer matches is dropped from the record, so the next download fetches
    it again.
    """
    folder = Path(folder or default_weights_dir()).expanduser()
    report = VerifyReport(folder)
    if not folder.is_dir():
        report.problems.append(f"no weights folder at {folder}")
        return report
    record = read_record(folder)
    present = [n for n in ALL_FILES if (folder / n).is_file()]
    report.problems += [f"{n}: missing" for n in ALL_FILES if n not in present]
    total = sum((folder / n).stat().st_size for n in present if full and n in record["files"])
    done = 0
    for name in present:
        path = folder / name
        problem = _recorded_size_problem(folder, name, record) or check_file(path)
        if not problem and name == TOKENIZER_FILE and full:
            problem = check_tokenizer_json(path, full=True)
        if problem:
            report.problems.append(f"{name}: {problem}")
            continue
        entry = record["files"].get(name)
        if not entry:
            report.notes.append(f"{name}: not verified against the Hub yet (structure is fine)")
            continue
        if not full:
            continue
        steps = Outcome(digest_steps(path, git_sha1=bool(entry.get("git_sha1"))))
        for n in steps:
            done += n
            yield Progress(VERIFY, done, total, name)
        sha256, sha1 = steps.result
        report.hashed.append(name)
        want256, want1 = entry.get("sha256"), entry.get("git_sha1")
        if (want256 and sha256 != want256) or (want1 and sha1 != want1):
            report.problems.append(f"{name}: contents changed since download (hash mismatch); it will be fetched again")
            forget_file(folder, name)
    return report


def verify_weights(folder: Path | str | None = None, *, full: bool = True,
                   on_progress: Callable[[str, int, int], None] | None = None) -> VerifyReport:
    """``verify_steps`` run to its end; ``on_progress(file, bytes_hashed, bytes_total)`` follows the hashing."""
    report = None if on_progress is None else (lambda ev: on_progress(ev.detail, ev.done, ev.total))
    return drain(verify_steps(folder, full=full), report)


class WeightsStatus(str):
    """``"missing"``, ``"partial"`` or ``"ready"``; ``.detail`` says more, for the first-launch dialog."""

    detail: str

    def __new__(cls, state: str, detail: str) -> "WeightsStatus":
        obj = super().__new__(cls, state)
        obj.detail = detail
        return obj


def _partial_bytes(folder: Path, name: str) -> int:
    partial = folder / PARTIAL_DIR
    try:
        return max((p.stat().st_size for p in partial.glob(f"{name}.*.part")), default=0)
    except OSError:
        return 0


def weights_status(folder: Path | str | None = None) -> WeightsStatus:
    folder = Path(folder or default_weights_dir()).expanduser()
    missing = _missing(folder) if folder.is_dir() else list(ALL_FILES)
    partial = sum(_partial_bytes(folder, n) for n in missing)
    if len(missing) == len(ALL_FILES) and not partial:
        size = download_size_text(load_manifest().approx_total_bytes)
        return WeightsStatus("missing", f"No model in {folder}: {size} to download.")
    try:
        locate_weights(folder)
    except WeightsError as error:
        resumable = f" {partial / 1e9:.2f} GB already downloaded will be resumed." if partial else ""
        return WeightsStatus("partial", f"{error}{resumable}")
    record = read_record(folder)
    unverified = [n for n in ALL_FILES if not is_recorded(folder, n, record)]
    if unverified:
        return WeightsStatus("ready", f"All files in {folder} are present and well-formed; not yet verified "
                                      f"against the Hub: {_join(unverified)}.")
    return WeightsStatus("ready", f"All files in {folder} are present and verified.")


def required_download_bytes(folder: Path | str | None = None) -> int:
    """Bytes still to fetch (approximate before the Hub's metadata is known; resumable parts excluded)."""
    folder = Path(folder or default_weights_dir()).expanduser()
    manifest = load_manifest()
    record = read_record(folder) if folder.is_dir() else {"files": {}}
    need = 0
    for name in ALL_FILES:
        path = folder / name
        if path.is_file() and not _recorded_size_problem(folder, name, record) and not check_file(path):
            continue
        size = (record["files"].get(name) or {}).get("size") or manifest.approx_bytes.get(name) or 0
        need += max(0, size - _partial_bytes(folder, name))
    return need
