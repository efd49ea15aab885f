"""decoder_config.yaml (SPEC §8): read and checked without torch, so the app can size a model too,
and the decoder_weights.pt tensor names and shapes it implies (checked before anything is loaded)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from engine.errors import ConfigError
from engine.request import SAMPLES_PER_FRAME
from engine.prompt.special_tokens import CODEBOOK_SIZE
from engine.untrusted import DECODER_CONFIG_BYTES, Refused, load_yaml, short_repr

NUM_QUANTIZERS = 64
# The largest whole number and the longest list accepted: the released config's largest value is
# 1024 (codebook_size) and its longest list has 4 entries. The widest decoder layer,
# n_filters · 2^len(rates), is 3072 there; MAX_WIDTH keeps a hostile file from sizing huge layers.
MAX_VALUE = 1 << 16
MAX_LIST = 16
MAX_WIDTH = 1 << 16


@dataclass(frozen=True)
class DecoderConfig:
    d_latent: int
    n_filters: int
    rates: tuple[int, ...]
    out_channel: int
    dim: int
    codebook_size: int
    num_quantizers: int
    encoder_input_channel: int | None = None
    encoder_n_filters: int | None = None
    encoder_strides: tuple[int, ...] | None = None
    encoder_d_latent: int | None = None

    @property
    def hop(self) -> int:
        return math.prod(self.rates)


def _section(raw: Mapping[str, Any], name: str, required: bool = True) -> Mapping[str, Any] | None:
    value = raw.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"decoder_config.yaml: '{name}' must be a section of settings; got {short_repr(value)}.")
    return value


def _int(section: Mapping[str, Any], prefix: str, key: str) -> int:
    if key not in section:
        raise ConfigError(f"decoder_config.yaml: missing '{prefix}.{key}'.")
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VALUE:
        raise ConfigError(f"decoder_config.yaml: '{prefix}.{key}' must be a whole number from 1 to {MAX_VALUE}; "
                          f"got {short_repr(value)}.")
    return value


def _ints(section: Mapping[str, Any], prefix: str, key: str) -> tuple[int, ...]:
    if key not in section:
        raise ConfigError(f"decoder_config.yaml: missing '{prefix}.{key}'.")
    value = section[key]
    if (not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_LIST
            or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_VALUE for v in value)):
        raise ConfigError(f"decoder_config.yaml: '{prefix}.{key}' must be a list of 1 to {MAX_LIST} whole numbers "
                          f"from 1 to {MAX_VALUE}; got {short_repr(value)}.")
    return tuple(value)


def parse_decoder_config(raw: Any) -> DecoderConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError("decoder_config.yaml must hold 'encoder', 'decoder' and 'quantizer' sections.")
    dec = _section(raw, "decoder")
    quant = _section(raw, "quantizer")
    enc = _section(raw, "encoder", required=False)
    cfg = DecoderConfig(
        d_latent=_int(dec, "decoder", "d_latent"),
        n_filters=_int(dec, "decoder", "n_filters"),
        rates=_ints(dec, "decoder", "rates"),
        out_channel=_int(dec, "decoder", "out_channel"),
        dim=_int(quant, "quantizer", "dim"),
        codebook_size=_int(quant, "quantizer", "codebook_size"),
        num_quantizers=_int(quant, "quantizer", "num_quantizers"),
        encoder_input_channel=_int(enc, "encoder", "input_channel") if enc else None,
        encoder_n_filters=_int(enc, "encoder", "n_filters") if enc else None,
        encoder_strides=_ints(enc, "encoder", "strides") if enc else None,
        encoder_d_latent=_int(enc, "encoder", "d_latent") if enc else None,
    )
    if cfg.codebook_size != CODEBOOK_SIZE:
        raise ConfigError(f"decoder_config.yaml: 'quantizer.codebook_size' is {cfg.codebook_size}; the token "
                          f"layout needs {CODEBOOK_SIZE}.")
    if cfg.num_quantizers != NUM_QUANTIZERS:
        raise ConfigError(f"decoder_config.yaml: 'quantizer.num_quantizers' is {cfg.num_quantizers}; the token "
                          f"layout needs {NUM_QUANTIZERS}.")
    if cfg.hop != SAMPLES_PER_FRAME:
        raise ConfigError(f"decoder_config.yaml: 'decoder.rates' {list(cfg.rates)} give {cfg.hop} samples per "
                          f"frame; the engine needs {SAMPLES_PER_FRAME}.")
    if cfg.d_latent != cfg.dim:
        raise ConfigError(f"decoder_config.yaml: 'decoder.d_latent' ({cfg.d_latent}) must equal "
                          f"'quantizer.dim' ({cfg.dim}): the summed codebook vectors feed the decoder.")
    if cfg.out_channel != 2:
        raise ConfigError(f"decoder_config.yaml: 'decoder.out_channel' is {cfg.out_channel}; the engine writes stereo (2).")
    if cfg.n_filters << len(cfg.rates) > MAX_WIDTH:
        raise ConfigError(f"decoder_config.yaml: 'decoder.n_filters' {cfg.n_filters} with {len(cfg.rates)} rates "
                          f"makes a layer {cfg.n_filters << len(cfg.rates):,} channels wide; at most {MAX_WIDTH:,} "
                          "are accepted.")
    return cfg


def load_decoder_config(path: Path | str) -> DecoderConfig:
    """The checked config of a decoder_config.yaml of at most DECODER_CONFIG_BYTES (no YAML aliases)."""
    path = Path(path)
    try:
        raw = load_yaml(path, DECODER_CONFIG_BYTES)
    except OSError as e:
        raise ConfigError(f"Cannot read decoder config {path}: {e.strerror or e}.") from None
    except Refused as e:
        raise ConfigError(f"Decoder config {path} is refused: {e}.") from None
    return parse_decoder_config(raw)


# -- the decoder_weights.pt tensors this config implies -------------------------------------------------
def codebook_names(k: int) -> tuple[str, str]:
    """The two names codebook ``k`` goes by in a decoder_weights.pt (either may be present)."""
    return f"quantizer.vq_layer_{k}._codebook.embed", f"quantizer.embed_{k}"


def decoder_tensor_shapes(cfg: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """File name → shape of every ``decoder.*`` tensor (weight-normed convolutions as ``weight_g`` /
    ``weight_v``), as ``engine.stages.codec.expected_decoder_tensors`` builds them from the modules."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, c_out: int, c_in: int, kernel: int, *, transposed: bool = False) -> None:
        weight = (c_in, c_out, kernel) if transposed else (c_out, c_in, kernel)
        shapes[f"{name}.weight_g"] = (weight[0], 1, 1)
        shapes[f"{name}.weight_v"] = weight
        shapes[f"{name}.bias"] = (c_out,)

    n = len(cfg.rates)
    widths = [cfg.n_filters << (n - i) for i in range(n + 1)]
    conv("decoder.model.0", widths[0], cfg.d_latent, 7)
    for i, stride in enumerate(cfg.rates, start=1):
        c_in, c_out, block = widths[i - 1], widths[i], f"decoder.model.{i}.block"
        shapes[f"{block}.0.alpha"] = (1, c_in, 1)
        conv(f"{block}.1", c_out, c_in, 2 * stride, transposed=True)
        for unit in (2, 3, 4):
            shapes[f"{block}.{unit}.block.0.alpha"] = (1, c_out, 1)
            conv(f"{block}.{unit}.block.1", c_out, c_out, 7)
            shapes[f"{block}.{unit}.block.2.alpha"] = (1, c_out, 1)
            conv(f"{block}.{unit}.block.3", c_out, c_out, 1)
    shapes[f"decoder.model.{n + 1}.alpha"] = (1, widths[-1], 1)
    conv(f"decoder.model.{n + 2}", cfg.out_channel, widths[-1], 7)
    return shapes
