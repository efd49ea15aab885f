import json

import pytest

from engine.model.config import ModelConfig, load_config, megatron_args_for
from engine.errors import ConfigError

REAL = ModelConfig(hidden_size=2048, num_layers=24, num_heads=32, num_kv_groups=8, head_dim=64,
                   ffn_hidden_size=5632, norm_eps=1e-6, rope_base=500000.0, vocab_size=130304,
                   padded_vocab_size=130432, max_positions=25600)


def test_round_trip_real_values_and_ignores_unknown_keys():
    args = megatron_args_for(REAL)
    assert {"lr", "micro_batch_size", "tensor_model_parallel_size"} <= args.keys()
    args["some_future_megatron_flag"] = {"nested": [1, 2]}
    assert ModelConfig.from_megatron_args(args) == REAL
    assert REAL.heads_per_group == 4


def test_reads_megatron_key_names():
    args = megatron_args_for(REAL)
    args.update(hidden_size=512, num_attention_heads=8, num_query_groups=2, kv_channels=32,
                ffn_hidden_size=1000, norm_epsilon=1e-5, rotary_base=10000, max_position_embeddings=777)
    cfg = ModelConfig.from_megatron_args(args)
    assert (cfg.hidden_size, cfg.num_heads, cfg.num_kv_groups, cfg.head_dim, cfg.ffn_hidden_size,
            cfg.norm_eps, cfg.rope_base, cfg.max_positions) == (512, 8, 2, 32, 1000, 1e-5, 10000.0, 777)


def test_defaults_head_dim_groups_positions_padding():
    args = megatron_args_for(REAL)
    args.update(kv_channels=None, group_query_attention=False, max_position_embeddings=None, seq_length=4096)
    del args["padded_vocab_size"]
    args["vocab_size"] = 1000
    cfg = ModelConfig.from_megatron_args(args)
    assert cfg.head_dim == 2048 // 32 and cfg.num_kv_groups == 32 and cfg.max_positions == 4096
    assert cfg.padded_vocab_size == 1024


@pytest.mark.parametrize("key,value", [
    ("normalization", "LayerNorm"), ("position_embedding_type", "learned_absolute"), ("swiglu", False),
    ("rotary_percent", 0.5), ("rotary_interleaved", True), ("qk_layernorm", True), ("num_experts", 8),
    ("mtp_num_layers", 1), ("apply_residual_connection_post_layernorm", True), ("add_bias_linear", False),
    ("untie_embeddings_and_output_weights", False), ("num_query_groups", 5), ("hidden_size", 0),
    ("vocab_size", "many"), ("padded_vocab_size", 100),
    # inv_freq must be exactly base^(-2i/d) at absolute positions, RMSNorm weight used as is, full attention
    ("use_rope_scaling", True), ("rotary_seq_len_interpolation_factor", 4), ("apply_layernorm_1p", True),
    ("window_size", [4096, 0]),
])
def test_refusals_name_the_key_and_value(key, value):
    args = megatron_args_for(REAL)
    args[key] = value
    with pytest.raises(ConfigError) as e:
        ModelConfig.from_megatron_args(args)
    msg = str(e.value)
    assert key in msg and (repr(value) in msg or str(value) in msg)


@pytest.mark.parametrize("key", ["normalization", "swiglu", "position_embedding_type",
                                 "untie_embeddings_and_output_weights", "hidden_size", "vocab_size"])
def test_missing_key_whose_default_is_unsupported(key):
    args = megatron_args_for(REAL)
    del args[key]
    with pytest.raises(ConfigError, match=key):
        ModelConfig.from_megatron_args(args)


def test_load_config_file_errors_name_the_path(tmp_path):
    good = tmp_path / "backbone_megatron_args.json"
    good.write_text(json.dumps(megatron_args_for(REAL)))
    assert load_config(good) == REAL
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match="nope.json"):
        load_config(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ConfigError, match="bad.json"):
        load_config(bad)
    args = megatron_args_for(REAL) | {"qk_layernorm": True}
    good.write_text(json.dumps(args))
    with pytest.raises(ConfigError, match="qk_layernorm.*backbone_megatron_args.json"):
        load_config(good)
