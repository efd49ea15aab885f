"""A weights folder is untrusted input (issue 16, item 5): each hostile file fails quickly, in little
memory, with one bounded line, before any model is built. ``engine.weights.preflight``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import MESSAGE_LIMIT, ConfigError, KhalaError, WeightsError
from hostile_files import ARGS, BACKBONE, DECODER, cases, damaged_copy, yaml_bomb

ROOT = Path(__file__).resolve().parent.parent
SECONDS, PEAK_MB = 2.0, 1024

# Runs every case in one fresh process (torch is never imported), each timed; prints one JSON line
# per case with the process's peak memory so far. The peak is VmHWM where Linux has it: ru_maxrss of
# a forked child also counts the parent it was copied from (here pytest, over 1 GB after torch).
# Address space is capped at 4 GB so that a regression fails instead of taking the machine.
CHILD = r"""
import json, resource, sys, time
try:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
except (ValueError, OSError):
    pass
from engine.errors import KhalaError
from engine.weights.preflight import check_model_files
def peak_mb():
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
for name, folder in json.loads(sys.argv[1]):
    start = time.perf_counter()
    try:
        check_model_files(folder)
        kind = message = None
    except KhalaError as error:
        kind, message = type(error).__name__, str(error)
    except BaseException as error:
        kind, message = "unexpected " + type(error).__name__, str(error)[:2000]
    print(json.dumps({"case": name, "seconds": time.perf_counter() - start, "kind": kind, "message": message,
                      "peak_mb": peak_mb(),
                      "torch": "torch" in sys.modules}), flush=True)
"""


def test_every_hostile_case_fails_fast_small_and_in_one_line(tiny_weights: Path, tmp_path: Path) -> None:
    marker = tmp_path / "a-command-ran"
    all_cases = cases(marker)
    folders = [(name, str(damaged_copy(tiny_weights, tmp_path / f"case{i}", damage)))
               for i, (name, damage, _) in enumerate(all_cases)]
    folders.append(("the good folder", str(tiny_weights)))
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(folders)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    results = {r["case"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert len(results) == len(folders)
    for name, _, expected in all_cases + [("the good folder", None, None)]:
        r = results[name]
        if expected is None:
            assert r["kind"] is None, (name, r["message"])
        else:
            kind, words = expected
            assert r["kind"] == kind and words in r["message"], (name, r["kind"], r["message"])
            assert "\n" not in r["message"] and len(r["message"]) <= MESSAGE_LIMIT, name
        assert r["seconds"] < SECONDS, (name, r["seconds"])
        assert not r["torch"], name
    assert max(r["peak_mb"] for r in results.values()) < PEAK_MB
    assert not marker.exists()  # the pickle that runs a command was never run


def test_the_cli_refuses_a_yaml_bomb_in_one_line(tiny_weights: Path, tmp_path: Path) -> None:
    def bomb(f: Path) -> None:
        (f / "decoder_config.yaml").unlink()
        (f / "decoder_config.yaml").write_text(yaml_bomb())

    folder = damaged_copy(tiny_weights, tmp_path / "bomb", bomb)
    command = ["generate", "--weights", str(folder), "--tags", "rock", "--instrumental", "--duration", "1",
               "--out", str(tmp_path / "song.wav")]
    out = subprocess.run([sys.executable, "-m", "engine.cli", *command], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "YAML alias" in lines[0]
    assert len(lines[0]) <= len("error: ") + MESSAGE_LIMIT
    assert not (tmp_path / "song.wav").exists()


# -- the pieces ---------------------------------------------------------------------------------------
def test_config_tensor_shapes_are_the_transformers_own() -> None:
    import torch

    from engine.model.config import ModelConfig
    from engine.model.transformer import Transformer
    from engine.testing.tiny_transformer import tiny_config

    real = ModelConfig(hidden_size=2048, num_layers=24, num_heads=32, num_kv_groups=8, head_dim=64,
                       ffn_hidden_size=5632, norm_eps=1e-6, rope_base=500000.0, vocab_size=130304,
                       padded_vocab_size=130432, max_positions=32768)
    for cfg in (real, tiny_config("superres")):
        with torch.device("meta"):
            model = Transformer(cfg)
        assert cfg.tensor_shapes() == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_decoder_tensor_shapes_are_the_codecs_own() -> None:
    from engine.stages import codec
    from engine.stages.decoder_config import codebook_names, decoder_tensor_shapes, parse_decoder_config
    from engine.testing.tiny_decoder import tiny_decoder_config

    real = {"decoder": {"d_latent": 128, "n_filters": 192, "rates": [8, 8, 8, 4], "out_channel": 2},
            "quantizer": {"dim": 128, "codebook_size": 1024, "num_quantizers": 64}}
    for raw in (real, tiny_decoder_config()):
        cfg = parse_decoder_config(raw)
        assert decoder_tensor_shapes(cfg) == codec.expected_decoder_tensors(cfg)
    assert codebook_names(7) == codec.codebook_names(7)


def test_the_decoder_table_is_what_torch_loads(tiny_weights: Path) -> None:
    import torch

    from engine.weights.tensor_tables import torch_archive_table

    loaded = torch.load(tiny_weights / DECODER, weights_only=True)
    table = torch_archive_table(tiny_weights / DECODER)
    assert {k: v.shape for k, v in table.items()} == {k: tuple(v.shape) for k, v in loaded.items()}
    assert {v.dtype for v in table.values()} == {"F32"}


def test_a_parameter_dict_and_an_ordered_dict_are_read_too(tmp_path: Path) -> None:
    import collections

    import torch

    from engine.weights.tensor_tables import torch_archive_table

    state = collections.OrderedDict(a=torch.nn.Parameter(torch.zeros(3, 2)), b=torch.ones(4, dtype=torch.bfloat16)[1:])
    state._metadata = {"": {"version": 1}}
    torch.save(state, tmp_path / "w.pt")
    table = torch_archive_table(tmp_path / "w.pt")
    assert {k: (v.dtype, v.shape) for k, v in table.items()} == {"a": ("F32", (3, 2)), "b": ("BF16", (3,))}


def test_a_storage_smaller_than_its_tensor_is_refused(tmp_path: Path) -> None:
    import io
    import zipfile

    import torch

    from engine.untrusted import Refused
    from engine.weights.tensor_tables import torch_archive_table

    torch.save({"w": torch.zeros(8)}, tmp_path / "w.pt")
    buffer = io.BytesIO()
    with zipfile.ZipFile(tmp_path / "w.pt") as src, zipfile.ZipFile(buffer, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data[:16] if info.filename.endswith("/data/0") else data)
    (tmp_path / "cut.pt").write_bytes(buffer.getvalue())
    with pytest.raises(Refused, match="storage should be 32 bytes, the archive holds 16"):
        torch_archive_table(tmp_path / "cut.pt")


@pytest.mark.parametrize("text, words", [
    ("decoder: &x {a: 1}\nquantizer: *x\n", "YAML alias"),
    ("a: " + "[" * 17 + "]" * 17, "nested more than 16"),
    ("a: [unclosed", "not valid YAML"),
])
def test_yaml_refusals(text: str, words: str) -> None:
    from engine.untrusted import Refused, parse_yaml

    with pytest.raises(Refused, match=words.replace("[", r"\[")):
        parse_yaml(text)
    assert parse_yaml("a: " + "[" * 15 + "]" * 15) == {"a": [[[[[[[[[[[[[[[]]]]]]]]]]]]]]]}


@pytest.mark.parametrize("text, refused", [
    ('{"a": "[[[[\\"[[[[", "b": [[{}]]}', False),  # brackets and escaped quotes inside strings
    ('["\\"' + "[" * 100 + '"]', False),  # an escaped quote does not end the string
    ('["\\\\", "' + "[" * 100 + '"]', False),  # an escaped backslash does not escape the quote after it
    ('"\\\\" ' + "[" * 40, True),  # an escaped backslash ends the string: the brackets are outside
    ("[" * 32 + "]" * 32, False),
    ("[" * 33 + "]" * 33, True),
    ('{"a": 1', True),  # invalid, but short: json says why
    ("[" * 10**6, True),
])
def test_json_depth(text: str, refused: bool) -> None:
    from engine.untrusted import Refused, parse_json

    if refused:
        with pytest.raises(Refused):
            parse_json(text)
    else:
        parse_json(text)


def test_json_depth_error_names_the_cause() -> None:
    from engine.untrusted import Refused, parse_json

    with pytest.raises(Refused, match="nested more than 32"):
        parse_json("[" * 33 + "]" * 33)
    with pytest.raises(Refused, match="not valid JSON"):
        parse_json('{"a": 1')


def test_messages_are_one_bounded_line() -> None:
    error = WeightsError("first\nsecond " + "x" * 10 * MESSAGE_LIMIT)
    assert str(error).startswith("first second x") and "\n" not in str(error)
    assert len(str(error)) == MESSAGE_LIMIT and str(error).endswith("…")
    assert str(ConfigError("short")) == "short"
    assert isinstance(error, KhalaError)


def test_config_bounds_name_the_key(tmp_path: Path) -> None:
    from engine.model.config import load_config
    from engine.model.config import megatron_args_for
    from engine.testing.tiny_transformer import tiny_config

    args = megatron_args_for(tiny_config("backbone"))
    for key, value, words in (("num_layers", 513, "more than the 512"), ("kv_channels", 15, "even size"),
                              ("rotary_base", 1e300, "up to 1e12"), ("hidden_size", [1] * 10**5, "hidden_size=[1, 1")):
        (tmp_path / ARGS).write_text(json.dumps({**args, key: value}))
        with pytest.raises(ConfigError, match=words.replace("[", r"\[")) as info:
            load_config(tmp_path / ARGS)
        assert len(str(info.value)) < 300


def test_locate_keeps_checking_structure_only(tiny_weights: Path, tmp_path: Path) -> None:
    """locate_weights (the app at start-up, the download) checks structure; the configs are the preflight's."""
    from engine.weights.folder import locate_weights
    from engine.weights.preflight import check_model_files

    folder = damaged_copy(tiny_weights, tmp_path / "w", lambda f: ((f / ARGS).unlink(), (f / ARGS).write_text(
        (tiny_weights / ARGS).read_text().replace('"num_layers": 2', '"num_layers": 3'))))
    locate_weights(folder)
    with pytest.raises(WeightsError, match=f"{BACKBONE} does not match {ARGS}: the file holds 2 layers"):
        check_model_files(folder)
