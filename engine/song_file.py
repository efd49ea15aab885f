"""The one writer (and reader) of a song on disk: audio + sidecar + codes, as one recoverable unit.

For an audio file ``X.wav`` the sidecar is ``X.wav.json`` and the codes ``X.wav.codes.npy``
(int16 [64, frames]), so ``X.wav`` and ``X.mp3`` in one folder keep separate sidecars. A name
that would pass the file system's 255-byte limit with a suffix is shortened with a hash.

A save is a redo journal: the name is claimed by creating ``.khala-<key>.save`` exclusively;
the three files are written to temporary names and fsync'ed; the journal is switched to
"commit" (one atomic rename) and lists the renames; the renames happen; the journal goes.
A kill at any moment leaves either nothing or, after ``recover`` (run at the next start), the
complete song. Temporary names are short (``.khala-<16 hex>.<part>.tmp``) whatever the song's
name, so the longest legal name works.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.audio import (BYTES_PER_SECOND, TEMP_PREFIX, TEMP_SUFFIX, AudioTags, check_format, encode_audio,
                          encode_json, encode_npy, write_error, write_temp)
from engine.errors import KhalaError, OutputError
from engine.events import Song
from engine.request import SAMPLE_RATE, SAMPLES_PER_FRAME, SongRequest

SIDECAR_FORMAT = "khala-song/1"
SIDECAR_SUFFIX = ".json"
CODES_SUFFIX = ".codes.npy"
NAME_MAX = 255  # bytes in one file name on APFS, HFS+, ext4
STALE_AFTER_S = 24 * 3600  # a journal this old is stale even if its process id is alive again
FRESH_S = 60.0  # an unreadable journal younger than this may still be being written
CODES_DTYPE = np.int16  # codes are 0..1023
_LEGACY_TEMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # the pre-journal writer's temporary files
_OUR_TEMP = re.compile(r"^\.khala-(?:(\d+)-[0-9a-f]{8}|[0-9a-f]{16}\.\w+)\.tmp$")


class SongFileError(KhalaError):
    """A song's files cannot be read: no sidecar, no codes, or damaged."""


# -- names -------------------------------------------------------------------------------------------
def _name_max(folder: Path) -> int:
    try:
        return min(NAME_MAX, os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def companion_path(audio: Path, suffix: str) -> Path:
    """``audio``'s name + ``suffix``; shortened with a hash of the name when that passes 255 bytes."""
    audio = Path(audio)
    name = audio.name + suffix
    if len(name.encode()) <= NAME_MAX:
        return audio.with_name(name)
    digest = hashlib.sha1(audio.name.encode()).hexdigest()[:10]
    room = NAME_MAX - len(suffix.encode()) - len(digest) - 1
    keep = audio.name.encode()[:room].decode("utf-8", "ignore")
    return audio.with_name(f"{keep}~{digest}{suffix}")


def sidecar_path(audio: Path) -> Path:
    return companion_path(audio, SIDECAR_SUFFIX)


def codes_path(audio: Path) -> Path:
    return companion_path(audio, CODES_SUFFIX)


def variation_path(out: Path, index: int) -> Path:
    """``song.wav``, ``song-2.wav``, ``song-3.wav``… for variations 0, 1, 2…"""
    return out if index == 0 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")


def song_title(request: SongRequest, variation: int = 0, variations: int = 1) -> str:
    """A title from the description's first words, else up to three tags, else the genre."""
    if request.description.strip():
        words = request.description.split()
        title = " ".join(words[:6]) + ("…" if len(words) > 6 else "")
    else:
        tags = [t.strip() for t in request.tags.split(",") if t.strip()]
        title = " · ".join(tags[:3]) if tags else (request.genre.strip() or "Untitled")
    return title + (f" ({variation + 1})" if variations > 1 else "")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "song"


# -- the sidecar ---------------------------------------------------------------------------------------
def build_sidecar(song: Song, *, title: str, audio_name: str, codes_name: str | None,
                  created_at: str | None = None) -> dict[str, Any]:
    """The one sidecar layout: format, title, audio, codes, created_at, then the engine's metadata
    (request, seed, variation, tokens, timings_s, seconds, sample_rate, device, dtype, engine, …)."""
    head = {"format": SIDECAR_FORMAT, "title": title, "audio": audio_name, "codes": codes_name,
            "created_at": created_at or datetime.now().isoformat(timespec="seconds")}
    meta = {k: v for k, v in song.metadata.items() if k not in head}
    meta.setdefault("seconds", round(song.seconds, 3))
    meta.setdefault("sample_rate", song.sample_rate)
    return {**head, **meta}


def tags_for(sidecar: dict[str, Any]) -> AudioTags:
    request = sidecar.get("request") or {}
    words = [w for w in (request.get("description", ""), request.get("tags", "")) if w]
    seed = sidecar.get("seed")
    comment = " · ".join([*words, f"seed {seed}"] if seed is not None else words)
    return AudioTags(title=str(sidecar.get("title", "")), genre=request.get("genre") or request.get("tags", ""),
                     comment=comment, lyrics="" if request.get("instrumental") else request.get("lyrics", ""),
                     seed=seed if isinstance(seed, int) else None)


# -- the journal -----------------------------------------------------------------------------------------
def _key(audio: Path) -> str:
    return hashlib.sha1(audio.name.encode()).hexdigest()[:16]


def journal_path(audio: Path) -> Path:
    return audio.with_name(f"{TEMP_PREFIX}{_key(audio)}.save")


def _part_temp(audio: Path, part: str) -> Path:
    return audio.with_name(f"{TEMP_PREFIX}{_key(audio)}.{part}{TEMP_SUFFIX}")


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}


def _alive(owner: dict[str, Any]) -> bool:
    """Could the process that wrote this journal still be writing?"""
    if time.time() - float(owner.get("time", 0)) > STALE_AFTER_S:
        return False
    if owner.get("host") != socket.gethostname():
        return True  # another machine on a shared folder: leave it alone
    pid = int(owner.get("pid", 0))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def _read_journal(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes()[:65536])
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, RecursionError):
        return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _claim(audio: Path) -> bool:
    """Create the journal (state "writing") exclusively and whole: its content is written to a temporary
    file first and then linked into place, so another writer never reads a half-written claim. False
    if another live writer holds the name."""
    path = journal_path(audio)
    content = json.dumps({"state": "writing", "owner": _owner(), "audio": audio.name}).encode()
    staged = write_temp(audio.parent, content)
    try:
        os.link(staged, path)
        return True
    except FileExistsError:
        pass
    except OSError:  # no hard links on this file system (exFAT, some network shares): exclusive create
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            return True
    finally:
        staged.unlink(missing_ok=True)
    journal = _read_journal(path)
    if _in_use(path, journal):
        return False
    _recover_journal(path, journal)
    return _claim(audio) if not path.exists() else False


def _in_use(path: Path, journal: dict[str, Any] | None) -> bool:
    """A journal whose writer may still be at work: its process is alive, or it cannot be read yet
    and is fresh (being written through the exclusive-create fallback)."""
    if journal is None:
        return time.time() - _mtime(path) < FRESH_S
    return _alive(journal.get("owner", {}))


def _taken(audio: Path) -> bool:
    return any(p.exists() for p in (audio, sidecar_path(audio), codes_path(audio)))


def _claim_free_name(audio: Path) -> Path:
    stem, ext = audio.stem, audio.suffix
    for n in range(1, 10_000):
        candidate = audio if n == 1 else audio.with_name(f"{stem}-{n}{ext}")
        if _taken(candidate) or not _claim(candidate):
            continue
        if _taken(candidate):  # committed by another writer between the check and the claim
            journal_path(candidate).unlink(missing_ok=True)
            continue
        return candidate
    raise OutputError(f"Cannot find a free name for {audio.name} in {audio.parent}.")


# -- writing ---------------------------------------------------------------------------------------------
@dataclass
class SavedSong:
    """A song whose audio, sidecar and codes are all on disk (the event consumers get after a Song)."""

    audio_path: Path
    sidecar_path: Path
    codes_path: Path | None
    sidecar: dict[str, Any]
    audio: np.ndarray = field(repr=False)
    variation: int = 0


def write_song(song: Song, audio_path: Path | str, *, title: str | None = None, overwrite: bool = True,
               created_at: str | None = None) -> SavedSong:
    """Put ``song`` on disk as one unit: ``audio_path`` (tagged), its sidecar and (when the song has
    codes) its codes. ``overwrite=False`` takes the first free name ``X``, ``X-2``, ``X-3``…;
    ``overwrite=True`` replaces an existing song of that name. OutputError (the OS's reason) on
    failure, with nothing left behind."""
    audio_path = Path(audio_path)
    check_format(audio_path)
    folder = audio_path.parent
    if overwrite:
        if not _claim(audio_path):
            raise OutputError(f"Another Khala is writing {audio_path.name} in {folder} right now.")
    else:
        audio_path = _claim_free_name(audio_path)
    parts: list[tuple[Path, Path]] = []
    try:
        title = title or song_title(SongRequest.from_dict(song.metadata.get("request") or {}), song.variation)
        codes_file = codes_path(audio_path) if song.codes is not None else None
        sidecar = build_sidecar(song, title=title, audio_name=audio_path.name,
                                codes_name=codes_file.name if codes_file else None, created_at=created_at)
        blobs = []
        if codes_file is not None:
            blobs.append(("codes", codes_file, encode_npy(np.asarray(song.codes).astype(CODES_DTYPE))))
        blobs.append(("audio", audio_path, encode_audio(audio_path.name, song.audio, song.sample_rate,
                                                        tags_for(sidecar))))
        blobs.append(("sidecar", sidecar_path(audio_path), encode_json(audio_path.name, sidecar)))
        for part, final, data in blobs:
            tmp = _part_temp(audio_path, part)
            tmp.unlink(missing_ok=True)
            parts.append((tmp, final))
            write_temp(folder, data, tmp)
        _commit(audio_path, parts)
    except BaseException as e:
        if journal_path(audio_path).exists() and (_read_journal(journal_path(audio_path)) or {}).get(
                "state") == "commit":
            _recover_journal(journal_path(audio_path), _read_journal(journal_path(audio_path)))
        else:
            for tmp, _ in parts:
                tmp.unlink(missing_ok=True)
            journal_path(audio_path).unlink(missing_ok=True)
        if isinstance(e, Exception):
            raise write_error(audio_path, e) from e
        raise
    return SavedSong(audio_path, sidecar_path(audio_path), codes_file, sidecar, song.audio, song.variation)


def _commit(audio: Path, parts: list[tuple[Path, Path]]) -> None:
    journal = journal_path(audio)
    record = {"state": "commit", "owner": _owner(), "audio": audio.name,
              "renames": [[tmp.name, final.name] for tmp, final in parts]}
    staged = audio.with_name(f"{TEMP_PREFIX}{_key(audio)}.commit{TEMP_SUFFIX}")
    write_temp(audio.parent, json.dumps(record).encode(), staged)
    os.replace(staged, journal)  # the commit point
    _roll_forward(audio.parent, record)
    _fsync_dir(audio.parent)
    journal.unlink()


def _roll_forward(folder: Path, record: dict[str, Any]) -> list[Path]:
    done = []
    for tmp_name, final_name in record.get("renames", []):
        tmp, final = folder / Path(tmp_name).name, folder / Path(final_name).name
        if tmp.exists():
            os.replace(tmp, final)
            done.append(final)
    return done


def _recover_journal(path: Path, journal: dict[str, Any] | None) -> Path | None:
    """Finish a committed save (returns its audio path) or undo an unfinished one (returns None)."""
    folder = path.parent
    key = path.name[len(TEMP_PREFIX):-len(".save")]
    audio = None
    if journal is not None and journal.get("state") == "commit":
        _roll_forward(folder, journal)
        audio = folder / Path(str(journal.get("audio", ""))).name
    for tmp in folder.glob(f"{TEMP_PREFIX}{key}.*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return audio


@dataclass
class Recovery:
    completed: list[Path] = field(default_factory=list)  # songs whose interrupted save was finished
    removed: list[Path] = field(default_factory=list)  # temporary files of ours that were deleted


def recover(folder: Path | str) -> Recovery:
    """Finish or undo interrupted saves in ``folder`` and remove stale temporary files of ours
    (never a file another running Khala is still writing). Run before writing into a folder."""
    folder = Path(folder)
    report = Recovery()
    if not folder.is_dir():
        return report
    try:
        names = os.listdir(folder)
    except OSError:
        return report
    for name in names:
        if name.startswith(TEMP_PREFIX) and name.endswith(".save"):
            path = folder / name
            journal = _read_journal(path)
            if _in_use(path, journal):
                continue
            done = _recover_journal(path, journal)
            (report.completed if done else report.removed).append(done or path)
    for name in os.listdir(folder):
        path = folder / name
        m = _OUR_TEMP.match(name)
        if m and m.group(1) is not None:  # a single-file write: stale when its process is gone
            stale = not _alive({"pid": int(m.group(1)), "host": socket.gethostname(), "time": _mtime(path)})
        elif m:  # a part of a song: stale when no journal guards it
            stale = not (folder / f"{name[:len(TEMP_PREFIX) + 16]}.save").exists()
        else:
            stale = bool(_LEGACY_TEMP.match(name)) and time.time() - _mtime(path) > 3600
        if stale:
            path.unlink(missing_ok=True)
            report.removed.append(path)
    return report


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


# -- reading ---------------------------------------------------------------------------------------------
@dataclass
class SongOnDisk:
    audio_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]

    @property
    def codes_path(self) -> Path | None:
        """The codes the sidecar names, beside the audio; when that file is gone, ``FILE.codes.npy``
        beside ``FILE`` (a song renamed with its companions still names its old codes)."""
        name = self.sidecar.get("codes")
        named = self.audio_path.with_name(Path(name).name) if isinstance(name, str) and name else None
        if named is not None and named.is_file():
            return named
        beside = codes_path(self.audio_path)
        return beside if beside.is_file() else named

    @property
    def title(self) -> str:
        return str(self.sidecar.get("title") or self.audio_path.stem)


def _load_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes()[: 16 << 20])
    except (OSError, ValueError, RecursionError):  # RecursionError: deeply nested arrays or objects
        return None
    return data if isinstance(data, dict) else None


def _legacy_sidecar(audio: Path) -> tuple[Path, dict[str, Any]] | None:
    """Before the one layout: ``X.json`` beside ``X.wav``, naming it in "audio" (CLI) or "file" (app)."""
    path = audio.with_suffix(".json")
    data = _load_sidecar(path)
    if data is None or audio.name not in (data.get("audio"), data.get("file")):
        return None
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    return path, {**meta, **{k: v for k, v in data.items() if k != "metadata"}}


def read_song(audio_path: Path | str) -> SongOnDisk:
    """The song at ``audio_path`` with its sidecar; SongFileError (one line) when there is none."""
    audio = Path(audio_path)
    if not audio.is_file():
        raise SongFileError(f"Song {audio} not found.")
    path = sidecar_path(audio)
    data = _load_sidecar(path)
    if data is None:
        legacy = _legacy_sidecar(audio)
        if legacy is None:
            why = "is damaged" if path.exists() else "is missing"
            raise SongFileError(f"{audio.name} has no usable Khala sidecar ({path.name} {why}): "
                                "only songs made by Khala can be extended.")
        path, data = legacy
    return SongOnDisk(audio, path, data)


NOT_NPY = "it is not a NumPy .npy file"
NPZ = "it is a .npz archive"


def read_npy(path: Path) -> np.ndarray:
    """The one array in the ``.npy`` file ``path``, never unpickled. ValueError whose text is one short
    reason: ``NOT_NPY``, ``NPZ``, pickled objects, or numpy's first line for a damaged file; OSError
    as the OS raised it."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"PK"):
        raise ValueError(NPZ)
    if magic != b"\x93NUMPY":  # np.load would take anything else for a pickle
        raise ValueError(NOT_NPY)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ValueError("it holds Python objects, not integer codes" if "pickle" in reason else reason) from None


def load_codes(song: SongOnDisk, num_quantizers: int = 64, codebook_size: int = 1024) -> np.ndarray:
    """The song's codes as int64 [64, frames]; SongFileError when missing or not Khala codes."""
    path = song.codes_path
    if path is None:
        raise SongFileError(f"{song.audio_path.name} has no saved codes (a song made on a Khala server has none); "
                            "it cannot be extended.")
    if not path.is_file():
        raise SongFileError(f"{song.audio_path.name} has no saved codes ({path.name} is missing); "
                            "it cannot be extended.")
    try:
        codes = read_npy(path)
    except OSError as e:
        raise SongFileError(f"The codes of {song.audio_path.name} ({path.name}) cannot be read: "
                            f"{e.strerror or e}.") from None
    except ValueError as e:
        raise SongFileError(f"The codes of {song.audio_path.name} ({path.name}) cannot be read: {e}.") from None
    if codes.ndim != 2 or codes.shape[0] != num_quantizers or codes.shape[1] < 1 or codes.dtype.kind not in "iu":
        raise SongFileError(f"{path.name} does not hold Khala codes: expected integers [{num_quantizers}, frames], "
                            f"got {codes.dtype} {list(codes.shape)}.")
    codes = codes.astype(np.int64)
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise SongFileError(f"{path.name} holds codes outside 0..{codebook_size - 1}: not this model's token layout.")
    return codes


def find_songs(folder: Path | str) -> list[SongOnDisk]:
    """Every complete song in ``folder``: an audio file with a readable sidecar that names it."""
    folder = Path(folder)
    found = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found
    for path in entries:
        if path.suffix.lower() not in BYTES_PER_SECOND or path.name.startswith("."):
            continue
        try:
            song = read_song(path)
        except SongFileError:
            continue
        if song.sidecar.get("audio", song.sidecar.get("file")) == path.name:
            found.append(song)
    return found


# -- before the model runs -------------------------------------------------------------------------------
def estimated_bytes(ext: str, seconds: float) -> int:
    """Upper estimate of one song's files: audio + codes + sidecar."""
    frames = seconds * SAMPLE_RATE / SAMPLES_PER_FRAME
    return int(BYTES_PER_SECOND.get(ext.lower(), BYTES_PER_SECOND[".wav"]) * seconds + 64 * 2 * frames + (64 << 10))


def check_output(audio_path: Path | str, *, variations: int = 1, seconds: float = 0.0) -> None:
    """Everything knowable before a song is made: the format, the folder (exists, is one, a probe
    file can be created and removed in it), every variation's name within the file system's name
    limit, and free space for ``variations`` songs of ``seconds``. OutputError otherwise."""
    path = Path(audio_path)
    check_format(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise OutputError(f"Cannot write {path.name}: the folder {folder} does not exist.")
    if not folder.is_dir():
        raise OutputError(f"Cannot write {path.name}: {folder} is not a folder.")
    limit = _name_max(folder)
    for i in range(variations):
        name = variation_path(path, i).name
        if len(name.encode()) > limit:
            which = f" (variation {i + 1})" if i else ""
            raise OutputError(f"Cannot write {name[:40]}…{which}: the name is {len(name.encode())} bytes; "
                              f"this file system allows {limit}.")
    for i in range(variations):
        audio = variation_path(path, i)
        for target in (audio, sidecar_path(audio), codes_path(audio)):
            if target.is_dir():
                raise OutputError(f"Cannot write {target}: it is a folder.")
    probe = None
    try:
        probe = write_temp(folder, b"")
        probe.unlink()
    except OSError as e:
        if probe is not None:
            probe.unlink(missing_ok=True)
        raise write_error(path, e) from None
    need = variations * estimated_bytes(path.suffix, seconds)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < need:
        raise OutputError(f"Not enough free space in {folder} for {path.name}: about {_size(need)} "
                          f"needed, {_size(free)} free.")


def _size(n: float) -> str:
    """Bytes in MB, or in kB below 1 MB (a tiny song on a nearly full disk was "0 MB needed, 0 MB free")."""
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{max(n, 0) / 1e3:,.0f} kB"
