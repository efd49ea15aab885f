"""decoder_config.yaml (SPEC §8): read and checked without torch, so the app can size a model too."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from engine.errors import ConfigError
from engine.request import SAMPLES_PER_FRAME
from engine.prompt.special_tokens import CODEBOOK_SIZE

NUM_QUANTIZERS = 64


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
        raise ConfigError(f"decoder_config.yaml: '{name}' must be a section of settings; got {value!r}.")
    return value


def _int(section: Mapping[str, Any], prefix: str, key: str) -> int:
    if key not in section:
        raise ConfigError(f"decoder_config.yaml: missing '{prefix}.{key}'.")
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"decoder_config.yaml: '{prefix}.{key}' must be a positive integer; got {value!r}.")
    return value


def _ints(section: Mapping[str, Any], prefix: str, key: str) -> tuple[int, ...]:
    if key not in section:
        raise ConfigError(f"decoder_config.yaml: missing '{prefix}.{key}'.")
    value = section[key]
    if (not isinstance(value, (list, tuple)) or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise ConfigError(f"decoder_config.yaml: '{prefix}.{key}' must be a list of positive integers; got {value!r}.")
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
    return cfg


def load_decoder_config(path: Path | str) -> DecoderConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"Cannot read decoder config {path}: {e.strerror or e}.") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"Decoder config {path} is not valid YAML.") from e
    return parse_decoder_config(raw)
