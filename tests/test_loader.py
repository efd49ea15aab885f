import json

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
