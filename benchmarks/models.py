"""Random models at chosen widths for the benchmarks (the cost of a forward does not depend
on the weights' values). Real token layout; real vocabularies unless told otherwise."""

from __future__ import annotations

from typing import Any

import torch

from engine.model.config import ModelConfig

EOS = 128001
AUDIO = (128256, 130304)  # q0 and q1 ids of the backbone


def transformer_config(kind: str, hidden: int = 512, layers: int = 8, heads: int = 8, groups: int = 2,
                       head_dim: int = 64, ffn: int | None = None) -> ModelConfig:
    vocab, padded = (130304, 130432) if kind == "backbone" else (193792, 193792)
    return ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_groups=groups,
                       head_dim=head_dim, ffn_hidden_size=ffn or (hidden * 11) // 4, norm_eps=1e-6,
                       rope_base=500000.0, vocab_size=vocab, padded_vocab_size=padded,
                       max_positions=32768)


REAL = {"hidden": 2048, "layers": 24, "heads": 32, "groups": 8, "head_dim": 64, "ffn": 5632}


def random_state(cfg: ModelConfig, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights, made in ``dtype`` tensor by tensor (no float32 copy of the whole model).

    Backbone: column 0 of every embedding is a large constant and the lm_head rows of audio
    ids read it positively, EOS negatively, so a random model never samples EOS and a
    benchmark decodes exactly the tokens it asks for (the compute is unchanged).
    """
    from engine.model.transformer import Transformer
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Transformer(cfg).state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        t = torch.empty(shape, dtype=dtype)
        if name.endswith("norm.weight"):
            t.fill_(1.0)
        elif name.endswith(".bias"):
            t.normal_(0, 0.02, generator=g)
        elif name == "embed.weight":
            t.normal_(0, 1, generator=g)
        else:
            t.normal_(0, shape[1] ** -0.5, generator=g)
        out[name] = t
    if cfg.vocab_size == 130304:
        out["embed.weight"][:, 0] = 50.0
        out["lm_head.weight"][AUDIO[0]:AUDIO[1], 0] = 5.0
        out["lm_head.weight"][EOS, :] = 0
        out["lm_head.weight"][EOS, 0] = -5.0
    return out


def random_transformer(cfg: ModelConfig, device: str, dtype: torch.dtype, seed: int = 0) -> Any:
    from engine.model.transformer import Transformer
    with torch.device("meta"):
        model = Transformer(cfg)
    state = {k: v.to(device) for k, v in random_state(cfg, dtype, seed).items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def decoder_config(n_filters: int = 192) -> Any:
    from engine.stages.decoder_config import DecoderConfig
    return DecoderConfig(d_latent=128, n_filters=n_filters, rates=(8, 8, 8, 4), out_channel=2, dim=128,
                         codebook_size=1024, num_quantizers=64)


def random_decoder(n_filters: int, device: str, dtype: torch.dtype, seed: int = 0) -> Any:
    from engine.stages.codec import DacDecoder
    torch.manual_seed(seed)
    with torch.device("meta"):
        m = DacDecoder(decoder_config(n_filters))
    state = {}
    for name, p in m.state_dict().items():
        t = torch.empty(p.shape, dtype=torch.float32)
        if name.endswith("alpha"):
            t.uniform_(0.5, 1.5)
        elif name == "codebooks":
            t.normal_(0, 0.125)
        elif p.dim() == 3 and "alpha" not in name:
            fan_in = p.shape[1] * p.shape[2] if "block.1." not in name or p.shape[0] < p.shape[1] else p.shape[0]
            t.normal_(0, fan_in ** -0.5)
        else:
            t.normal_(0, 0.01)
        state[name] = t.to(device=device, dtype=dtype)
    m.load_state_dict(state, strict=True, assign=True)
    return m.eval().requires_grad_(False)
