"""A tiny random DAC decoder in the exact published layout: decoder_weights.pt + decoder_config.yaml.

Real token layout (64 codebooks × 1024, 2048 samples per frame), tiny widths.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import yaml

from engine.stages.codec import codebook_names, expected_decoder_tensors
from engine.stages.decoder_config import parse_decoder_config

OUTPUT_GAIN = 0.02


def tiny_decoder_config() -> dict[str, Any]:
    return {
        "encoder": {"input_channel": 2, "n_filters": 2, "strides": [4, 8, 8, 8], "d_latent": 8},
        "decoder": {"d_latent": 8, "n_filters": 4, "rates": [8, 8, 8, 4], "out_channel": 2},
        "quantizer": {"dim": 8, "codebook_size": 1024, "num_quantizers": 64},
    }


def _weight_norm_pair(gen: torch.Generator, shape: tuple[int, ...], gain: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A random v and g = gain (each dim-0 slice of the folded weight then has norm ``gain``)."""
    v = torch.randn(shape, generator=gen)
    g = torch.full((shape[0], 1, 1), gain) * (1 + 0.1 * torch.randn(shape[0], 1, 1, generator=gen))
    return g, v


def _gain(name: str, rates: tuple[int, ...]) -> float:
    """Weight-norm gains that keep random activations near unit scale through the decoder."""
    parts = name.split(".")
    if name == f"decoder.model.{len(rates) + 2}.weight_g":
        return OUTPUT_GAIN
    if name.startswith("decoder.model.") and parts[3:5] == ["block", "1"] and len(parts) == 6:
        return math.sqrt(rates[int(parts[2]) - 1] / 2)  # transposed conv: 2 taps per output of 2s
    if len(parts) > 6 and parts[6] == "3":
        return 0.3  # last conv of a residual unit: keeps the residual stack from growing
    return 1.0


def _encoder_shapes(enc: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """DAC encoder names (never loaded by the engine; present so the file looks like the real one)."""
    out: dict[str, tuple[int, ...]] = {}

    def conv(name: str, c_in: int, c_out: int, k: int) -> None:
        out[f"{name}.weight_g"] = (c_out, 1, 1)
        out[f"{name}.weight_v"] = (c_out, c_in, k)
        out[f"{name}.bias"] = (c_out,)

    width = enc["n_filters"]
    conv("encoder.block.0", enc["input_channel"], width, 7)
    for i, stride in enumerate(enc["strides"], start=1):
        for j in range(3):
            unit = f"encoder.block.{i}.block.{j}.block"
            out[f"{unit}.0.alpha"] = (1, width, 1)
            conv(f"{unit}.1", width, width, 7)
            out[f"{unit}.2.alpha"] = (1, width, 1)
            conv(f"{unit}.3", width, width, 1)
        out[f"encoder.block.{i}.block.3.alpha"] = (1, width, 1)
        conv(f"encoder.block.{i}.block.4", width, 2 * width, 2 * stride)
        width *= 2
    n = len(enc["strides"])
    out[f"encoder.block.{n + 1}.alpha"] = (1, width, 1)
    conv(f"encoder.block.{n + 2}", width, enc["d_latent"], 3)
    return out


def write_tiny_decoder(folder: Path | str, seed: int = 0) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = tiny_decoder_config()
    cfg = parse_decoder_config(raw)
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    shapes = {**_encoder_shapes(raw["encoder"]), **expected_decoder_tensors(cfg)}
    for name, shape in shapes.items():
        if name.endswith(".weight_v"):
            continue
        if name.endswith(".weight_g"):
            base = name[: -len(".weight_g")]
            gain = _gain(name, cfg.rates)
            state[name], state[base + ".weight_v"] = _weight_norm_pair(gen, shapes[base + ".weight_v"], gain)
        elif name.endswith(".alpha"):
            state[name] = 0.5 + torch.rand(shape, generator=gen)
        else:
            state[name] = 0.01 * torch.randn(shape, generator=gen)
    for k in range(cfg.num_quantizers):
        book = torch.randn(cfg.codebook_size, cfg.dim, generator=gen) / math.sqrt(cfg.num_quantizers)
        for name in codebook_names(k):
            state[name] = book  # one storage, two names, as in the published file
    torch.save(state, folder / "decoder_weights.pt")
    (folder / "decoder_config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")

