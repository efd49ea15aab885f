import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.errors import ConfigError, WeightsError
from engine.model.loader import load_transformer
from engine.testing.tiny_transformer import tiny_config, write_tiny_transformer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    write_tiny_transformer(d, "backbone", seed=3)
    return d


def paths(d):
    return d / "khala_backbone.safetensors", d / "backbone_megatron_args.json"


def test_loads_exact_values_in_target_dtype(folder):
    st, args = paths(folder)
    m = load_transformer(st, args, "cpu", torch.float32)
    assert m.cfg == tiny_config("backbone")
    raw = load_file(str(st))
    assert raw["embed.weight"].dtype == torch.bfloat16 and raw["embed.weight"].shape == (130432, 32)
    for name, t in m.state_dict().items():
        assert t.dtype == torch.float32 and t.device.type == "cpu"
        assert torch.equal(t, raw[name].float()), name
    assert not any(p.requires_grad for p in m.parameters())
    assert (raw["layers.0.mlp.gate_proj.bias"] != 0).all()
    m16 = load_transformer(st, args, torch.device("cpu"), torch.bfloat16)
    assert m16.lm_head.weight.dtype == torch.bfloat16


def _damaged(folder, tmp_path, edit):
    st, args = paths(folder)
    sd = load_file(str(st))
    edit(sd)
    out = tmp_path / "khala_backbone.safetensors"
    save_file(sd, str(out))
    return out, args


def test_missing_tensor_named(folder, tmp_path):
    st, args = _damaged(folder, tmp_path, lambda sd: sd.pop("layers.1.mlp.up_proj.bias"))
    with pytest.raises(WeightsError, match=r"layers\.1\.mlp\.up_proj\.bias.*khala_backbone\.safetensors"):
        load_transformer(st, args, "cpu", torch.float32)


def test_extra_tensor_named(folder, tmp_path):
    st, args = _damaged(folder, tmp_path, lambda sd: sd.update({"layers.0.attn.q_norm.weight": torch.ones(16)}))
    with pytest.raises(WeightsError, match=r"layers\.0\.attn\.q_norm\.weight.*khala_backbone"):
        load_transformer(st, args, "cpu", torch.float32)


def test_wrong_shape_named(folder, tmp_path):
    def edit(sd):
        sd["layers.0.attn.k_proj.weight"] = sd["layers.0.attn.k_proj.weight"][:16].contiguous()
    st, args = _damaged(folder, tmp_path, edit)
    with pytest.raises(WeightsError, match=r"layers\.0\.attn\.k_proj\.weight.*\[16, 32\].*\[32, 32\]"):
        load_transformer(st, args, "cpu", torch.float32)


@pytest.mark.parametrize("keep", [0.5, 0.999, 10])  # fraction of the file kept, or bytes
def test_truncated_file_named(folder, tmp_path, keep):
    st, args = paths(folder)
    data = st.read_bytes()
    cut = tmp_path / "khala_backbone.safetensors"
    cut.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(WeightsError, match="khala_backbone.safetensors"):
        load_transformer(cut, args, "cpu", torch.float32)


def test_garbage_and_missing_file(folder, tmp_path):
    _, args = paths(folder)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsError, match="junk.safetensors"):
        load_transformer(junk, args, "cpu", torch.float32)
    with pytest.raises(WeightsError, match="absent.safetensors"):
        load_transformer(tmp_path / "absent.safetensors", args, "cpu", torch.float32)


def test_config_mismatch_is_a_shape_error_and_bad_args_a_config_error(folder, tmp_path):
    st, args = paths(folder)
    a = json.loads(args.read_text())
    a["ffn_hidden_size"] = 100
    p = tmp_path / "backbone_megatron_args.json"
    p.write_text(json.dumps(a))
    with pytest.raises(WeightsError, match=r"mlp\.gate_proj"):
        load_transformer(st, p, "cpu", torch.float32)
    a["normalization"] = "LayerNorm"
    p.write_text(json.dumps(a))
    with pytest.raises(ConfigError, match="normalization"):
        load_transformer(st, p, "cpu", torch.float32)


# ---- slice-by-slice reads: exact values, every file dtype, no mapped file, peak near the model --------

@pytest.mark.parametrize("file_dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_exact_values_across_read_slices(folder, tmp_path, monkeypatch, file_dtype, dtype):
    import engine.model.loader as loader
    st, args = _damaged(folder, tmp_path, lambda sd: sd.update({k: v.to(file_dtype) for k, v in sd.items()}))
    monkeypatch.setattr(loader, "READ_CHUNK_BYTES", 1000)  # odd slices: most tensors span several
    m = load_transformer(st, args, "cpu", dtype)
    raw = load_file(str(st))
    for name, t in m.state_dict().items():
        assert t.dtype == dtype and t.is_contiguous()
        assert torch.equal(t, raw[name].to(dtype)), name


def test_integer_tensor_refused(folder, tmp_path):
    st, args = _damaged(folder, tmp_path, lambda sd: sd.update(
        {"layers.0.attn.q_proj.bias": sd["layers.0.attn.q_proj.bias"].to(torch.int32)}))
    with pytest.raises(WeightsError, match=r"layers\.0\.attn\.q_proj\.bias.*I32.*floating point"):
        load_transformer(st, args, "cpu", torch.float32)


def test_file_shorter_than_its_header_says_while_reading(folder, monkeypatch):
    """Past the header check (e.g. the file shrank meanwhile): a clear error naming file and tensor."""
    import engine.model.loader as loader
    st, args = paths(folder)
    real = loader._data_offsets
    size = st.stat().st_size

    def shifted(path):
        o = real(path)
        a, b = o["norm.weight"]
        o["norm.weight"] = (size - 4, size - 4 + b - a)
        return o
    monkeypatch.setattr(loader, "_data_offsets", shifted)
    with pytest.raises(WeightsError, match=r"khala_backbone\.safetensors.*norm\.weight.*ends before"):
        load_transformer(st, args, "cpu", torch.float32)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_file_not_mapped_while_data_is_read(folder, monkeypatch):
    import engine.model.loader as loader
    st, args = paths(folder)
    seen = []
    real = loader._read_tensor

    def spy(*a, **kw):
        seen.append(str(st.resolve()) in Path("/proc/self/maps").read_text())
        return real(*a, **kw)
    monkeypatch.setattr(loader, "_read_tensor", spy)
    load_transformer(st, args, "cpu", torch.float16)
    assert seen and not any(seen)


LOAD_PEAK = """
import sys, torch
from engine.model.loader import load_transformer
def kib(key):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key + ':')) * 1024
before = kib('VmRSS')
open('/proc/self/clear_refs', 'w').write('5')
m = load_transformer(sys.argv[1], sys.argv[2], 'cpu', getattr(torch, sys.argv[3]))
print(kib('VmHWM') - before, sum(p.numel() * p.element_size() for p in m.parameters()))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset VmHWM")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_load_peak_is_the_model_not_model_plus_file(tmp_path, dtype):
    """A 140 MB bf16 file, loaded in a fresh process: the load's resident growth stays near the
    model's size (a mapped file would add its 140 MB until closed)."""
    import subprocess
    import sys

    from engine.model.config import ModelConfig, megatron_args_for
    from engine.testing.tiny_transformer import tiny_state_dict
    cfg = ModelConfig(hidden_size=256, num_layers=2, num_heads=4, num_kv_groups=2, head_dim=64, ffn_hidden_size=512,
                      norm_eps=1e-6, rope_base=5e5, vocab_size=130304, padded_vocab_size=130432, max_positions=4096)
    st, args = tmp_path / "khala_backbone.safetensors", tmp_path / "backbone_megatron_args.json"
    save_file(tiny_state_dict(cfg), str(st))
    args.write_text(json.dumps(megatron_args_for(cfg)))
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", LOAD_PEAK, str(st), str(args), dtype], cwd=root,
                         capture_output=True, text=True, timeout=120, check=True)
    growth, model = map(int, out.stdout.split())
    file_bytes = st.stat().st_size
    assert growth < model + file_bytes / 4, (growth, model, file_bytes)
