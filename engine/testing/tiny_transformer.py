"""A tiny random transformer in the exact published file format (bf16 safetensors + args JSON),
with the real token-id layout, so the whole pipeline runs in seconds on a CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from engine.model.config import ModelConfig, megatron_args_for
from engine.model.transformer import Transformer

Kind = Literal["backbone", "superres"]
_VOCAB = {"backbone": (130304, 130432), "superres": (193792, 193792)}


def tiny_config(kind: Kind) -> ModelConfig:
    if kind not in _VOCAB:
        raise ValueError(f"kind must be 'backbone' or 'superres', got {kind!r}")
    vocab, padded = _VOCAB[kind]
    return ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_groups=2, head_dim=16,
                       ffn_hidden_size=96, norm_eps=1e-6, rope_base=500000.0, vocab_size=vocab,
                       padded_vocab_size=padded, max_positions=32768 if kind == "backbone" else 8192)


def tiny_state_dict(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights scaled so activations stay near unit size; every bias non-zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Transformer(cfg).state_dict().items()}
    out = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        elif name == "embed.weight":
            t = torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / shape[1] ** 0.5
        out[name] = t.to(torch.bfloat16)
    return out


def write_tiny_transformer(folder: Path | str, kind: Kind, seed: int = 0) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(kind)
    save_file(tiny_state_dict(cfg, seed), str(folder / f"khala_{kind}.safetensors"))
    (folder / f"{kind}_megatron_args.json").write_text(json.dumps(megatron_args_for(cfg), indent=1))
