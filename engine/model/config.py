"""Transformer config read from a ``*_megatron_args.json`` (SPEC §3).

The file holds every Megatron training argument; only the keys below are read, and any
value the engine does not implement is refused with a ConfigError naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.untrusted import MEGATRON_ARGS_BYTES, Refused, load_json, short_repr

# key -> (Megatron's default when absent, the value the engine implements, why)
_MUST_BE = {
    "normalization": ("LayerNorm", "RMSNorm", "only RMSNorm is implemented"),
    "position_embedding_type": ("learned_absolute", "rope", "only rope positions are implemented"),
    "swiglu": (False, True, "only the SwiGLU MLP is implemented"),
    "add_bias_linear": (True, True, "the engine expects biases on every linear layer"),
    "untie_embeddings_and_output_weights": (False, True, "the engine expects a separate output layer"),
}
# keys that must be absent, None, False or 0
_MUST_BE_OFF = ("rotary_interleaved", "qk_layernorm", "num_experts", "mtp_num_layers",
                "apply_residual_connection_post_layernorm", "multi_latent_attention",
                "use_rope_scaling", "apply_layernorm_1p", "window_size")
# key -> the largest value accepted. Each is far above the released model (the value in the
# comment) and keeps a hostile file from sizing gigabytes of modules before the weights are read.
_MAX = {
    "hidden_size": 1 << 16,  # 2048
    "num_layers": 512,  # 24
    "num_attention_heads": 1024,  # 32
    "num_query_groups": 1024,  # 8
    "kv_channels": 1024,  # 64
    "ffn_hidden_size": 1 << 18,  # 5632
    "vocab_size": 1 << 20,  # 130304 and 193792
    "padded_vocab_size": 1 << 20,  # 130432 and 193792
    "make_vocab_size_divisible_by": 1 << 16,  # 128
    "tensor_model_parallel_size": 1 << 10,  # 1
    "max_position_embeddings": 1 << 22,  # 32768 and 8192
    "seq_length": 1 << 22,
}


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_groups: int
    head_dim: int
    ffn_hidden_size: int
    norm_eps: float
    rope_base: float
    vocab_size: int
    padded_vocab_size: int
    max_positions: int

    @property
    def heads_per_group(self) -> int:
        return self.num_heads // self.num_kv_groups

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every tensor in the ``khala_*.safetensors`` of this config (SPEC §3),
        as ``engine.model.transformer.Transformer(cfg).state_dict()`` names them."""
        H, F, d = self.hidden_size, self.ffn_hidden_size, self.head_dim
        q, kv = self.num_heads * d, self.num_kv_groups * d
        shapes: dict[str, tuple[int, ...]] = {"embed.weight": (self.padded_vocab_size, H)}
        for i in range(self.num_layers):
            layer = f"layers.{i}."
            for name, shape in (("input_norm.weight", (H,)),
                                ("attn.q_proj.weight", (q, H)), ("attn.q_proj.bias", (q,)),
                                ("attn.k_proj.weight", (kv, H)), ("attn.k_proj.bias", (kv,)),
                                ("attn.v_proj.weight", (kv, H)), ("attn.v_proj.bias", (kv,)),
                                ("attn.o_proj.weight", (H, q)), ("attn.o_proj.bias", (H,)),
                                ("post_attn_norm.weight", (H,)),
                                ("mlp.gate_proj.weight", (F, H)), ("mlp.gate_proj.bias", (F,)),
                                ("mlp.up_proj.weight", (F, H)), ("mlp.up_proj.bias", (F,)),
                                ("mlp.down_proj.weight", (H, F)), ("mlp.down_proj.bias", (H,))):
                shapes[layer + name] = shape
        shapes["norm.weight"] = (H,)
        shapes["lm_head.weight"] = (self.padded_vocab_size, H)
        return shapes

    @classmethod
    def from_megatron_args(cls, args: dict[str, Any]) -> "ModelConfig":
        if not isinstance(args, dict):
            raise ConfigError(f"Model arguments must be a JSON object, got {type(args).__name__}.")
        for key, (default, want, why) in _MUST_BE.items():
            value = args.get(key, default)
            if value != want or type(value) is not type(want):
                shown = f"{key}={short_repr(value)}" if key in args else f"{key} absent (Megatron default {default!r})"
                raise ConfigError(f"Unsupported model argument {shown}: {why}.")
        for key in _MUST_BE_OFF:
            if args.get(key) not in (None, False, 0):
                raise ConfigError(f"Unsupported model argument {key}={short_repr(args[key])}: "
                                  "the engine does not implement it.")
        if args.get("rotary_seq_len_interpolation_factor") not in (None, 1):
            raise ConfigError("Unsupported model argument rotary_seq_len_interpolation_factor="
                              f"{short_repr(args['rotary_seq_len_interpolation_factor'])}: "
                              "RoPE positions are not interpolated.")
        if "rotary_percent" in args and _num(args, "rotary_percent", 1.0) != 1.0:
            raise ConfigError(f"Unsupported model argument rotary_percent={short_repr(args['rotary_percent'])}: "
                              "only rotary over the whole head is implemented.")

        hidden = _int(args, "hidden_size")
        heads = _int(args, "num_attention_heads")
        groups = _int(args, "num_query_groups") if args.get("group_query_attention") else heads
        if heads % groups:
            raise ConfigError(f"Unsupported model argument num_query_groups={groups}: "
                              f"it must divide num_attention_heads={heads}.")
        head_dim = _int(args, "kv_channels") if args.get("kv_channels") is not None else hidden // heads
        if head_dim < 2 or head_dim % 2:
            raise ConfigError(f"Unsupported head size {head_dim} (kv_channels, or hidden_size / "
                              "num_attention_heads): rotate-half RoPE needs an even size of at least 2.")
        vocab = _int(args, "vocab_size")
        if args.get("padded_vocab_size") is not None:
            padded = _int(args, "padded_vocab_size")
        else:  # Megatron's own rule
            step = _int(args, "make_vocab_size_divisible_by", 128) * _int(args, "tensor_model_parallel_size", 1)
            padded = -(-vocab // step) * step
        if padded < vocab:
            raise ConfigError(f"Bad model argument padded_vocab_size={padded}: smaller than vocab_size={vocab}.")
        pos_key = "max_position_embeddings" if args.get("max_position_embeddings") is not None else "seq_length"
        return cls(hidden_size=hidden, num_layers=_int(args, "num_layers"), num_heads=heads,
                   num_kv_groups=groups, head_dim=head_dim, ffn_hidden_size=_int(args, "ffn_hidden_size"),
                   norm_eps=_num(args, "norm_epsilon", 1e-5), rope_base=_num(args, "rotary_base", 10000.0),
                   vocab_size=vocab, padded_vocab_size=padded, max_positions=_int(args, pos_key))


def _int(args: dict[str, Any], key: str, default: int | None = None) -> int:
    value = args.get(key, default)
    if value is None:
        raise ConfigError(f"Model arguments lack {key!r}.")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"Bad model argument {key}={short_repr(value)}: expected a positive whole number.")
    if value > _MAX.get(key, 1 << 20):
        raise ConfigError(f"Bad model argument {key}={short_repr(value)}: more than the "
                          f"{_MAX.get(key, 1 << 20):,} the engine accepts (the released model is far smaller).")
    return value


def _num(args: dict[str, Any], key: str, default: float) -> float:
    """A positive finite number up to 1e12 (rotary_base is 500000; norm_epsilon 1e-6)."""
    value = args.get(key)
    if value is None:
        return default
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value)) or not 0 < value <= 1e12):
        raise ConfigError(f"Bad model argument {key}={short_repr(value)}: expected a positive number up to 1e12.")
    return float(value)


def load_config(path: Path | str) -> ModelConfig:
    """The config in a ``*_megatron_args.json`` (at most MEGATRON_ARGS_BYTES); ConfigError naming the file."""
    path = Path(path)
    try:
        args = load_json(path, MEGATRON_ARGS_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"Model arguments file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"Cannot read model arguments {path}: {e.strerror or e}") from None
    except Refused as e:
        raise ConfigError(f"Cannot read model arguments {path}: {e}") from None
    try:
        return ModelConfig.from_megatron_args(args)
    except ConfigError as e:
        raise ConfigError(f"{e} ({path})") from None


def megatron_args_for(cfg: ModelConfig) -> dict[str, Any]:
    """A realistic args dict for ``cfg``: the keys the engine reads plus unrelated training keys."""
    return {
        "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
        "ffn_hidden_size": cfg.ffn_hidden_size, "num_attention_heads": cfg.num_heads,
        "group_query_attention": cfg.num_kv_groups != cfg.num_heads, "num_query_groups": cfg.num_kv_groups,
        "kv_channels": cfg.head_dim, "max_position_embeddings": cfg.max_positions,
        "seq_length": cfg.max_positions, "position_embedding_type": "rope", "rotary_base": cfg.rope_base,
        "rotary_percent": 1.0, "rotary_interleaved": False, "rotary_seq_len_interpolation_factor": None,
        "normalization": "RMSNorm", "norm_epsilon": cfg.norm_eps, "swiglu": True,
        "add_bias_linear": True, "add_qkv_bias": True, "qk_layernorm": False,
        "untie_embeddings_and_output_weights": True, "apply_residual_connection_post_layernorm": False,
        "num_experts": None, "mtp_num_layers": None, "vocab_size": cfg.vocab_size,
        "padded_vocab_size": cfg.padded_vocab_size, "make_vocab_size_divisible_by": 128,
        "tokenizer_type": "HuggingFaceTokenizer", "lr": 0.0003, "min_lr": 3e-05,
        "lr_decay_style": "cosine", "weight_decay": 0.1, "micro_batch_size": 2, "global_batch_size": 1024,
        "tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1, "bf16": True, "fp16": False,
        "attention_dropout": 0.0, "hidden_dropout": 0.0, "seed": 1234, "train_iters": 500000,
        "use_flash_attn": True, "sequence_parallel": False, "attention_backend": "AttnBackend.auto",
    }
