"""Everything about a weights folder that can be known before a model is built, checked at once.

A weights folder is user input (the first-launch dialog, Settings, ``--weights``): each file is
read with a size cap, JSON and YAML with a nesting cap and no YAML aliases (``engine.untrusted``),
each config is bounded and matched against the tensor table of its weight file (headers only:
``engine.weights.tensor_tables``). No torch, no tensor data: about 0.3 s, mostly tokenizer.json.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import ConfigError, KhalaError, WeightsError
from engine.model.config import ModelConfig, load_config
from engine.prompt.special_tokens import AUDIO_BASE, CODEBOOK_SIZE
from engine.stages.decoder_config import DecoderConfig, codebook_names, decoder_tensor_shapes, load_decoder_config
from engine.untrusted import Refused, short_repr
from engine.weights.folder import WeightPaths, check_tokenizer_json, locate_weights
from engine.weights.tensor_tables import TensorEntry, safetensors_table, torch_archive_table

# Audio codebooks whose token ids each model must hold (SPEC §6, §7): q0 and q1 for the backbone
# (vocab 130304), all 64 for super-res (vocab 193792).
BACKBONE_CODEBOOKS = 2
SUPERRES_CODEBOOKS = 64


def check_model_files(paths: WeightPaths | Path | str) -> None:
    """Raise a one-line WeightsError or ConfigError unless every file of the folder is usable.

    ``paths`` is a folder (then ``locate_weights`` runs first) or its WeightPaths. Checked: both
    ``*_megatron_args.json`` (bounded values) against their safetensors headers (every tensor name,
    shape and floating dtype, and sizes that add up); ``decoder_config.yaml`` against the tensor
    table of ``decoder_weights.pt``; ``tokenizer.json`` is a Llama-3 BPE. Reads headers only.
    """
    if not isinstance(paths, WeightPaths):
        paths = locate_weights(paths)
    try:
        _check_transformer(paths.backbone_args, paths.backbone, BACKBONE_CODEBOOKS)
        _check_transformer(paths.superres_args, paths.superres, SUPERRES_CODEBOOKS)
        _check_decoder(paths.decoder, load_decoder_config(paths.decoder_config))
        problem = check_tokenizer_json(paths.tokenizer)
    except KhalaError:
        raise
    except OSError as error:
        raise WeightsError(f"Cannot read {error.filename or 'a weight file'}: {error.strerror or error}.") from None
    if problem is not None:
        raise WeightsError(f"Tokenizer file {paths.tokenizer}: {problem}.")


def _table(path: Path, read) -> dict[str, TensorEntry]:
    try:
        return read(path)
    except Refused as error:
        raise WeightsError(f"Weight file {path}: {error}. Run `khala weights download --dir {path.parent}` "
                           "to repair it.") from None


def _compare(table: dict[str, TensorEntry], want: dict[str, tuple[int, ...]], path: Path, source: str) -> None:
    """The first difference between a file's tensors and those ``source`` (a config file) implies."""
    for name, shape in want.items():
        entry = table.get(name)
        if entry is None:
            raise WeightsError(f"{path.name} does not match {source}: tensor {name} is missing ({path}).")
        if entry.shape != shape:
            raise WeightsError(f"{path.name} does not match {source}: tensor {name} has shape {list(entry.shape)}, "
                               f"{source} implies {list(shape)} ({path}).")
        if not entry.floating:
            raise WeightsError(f"Tensor {name} in {path} has dtype {entry.dtype}, expected floating point.")


def _check_transformer(args_path: Path, weights_path: Path, codebooks: int) -> ModelConfig:
    cfg = load_config(args_path)  # bounded values: nothing below can be sized by a hostile number
    need = AUDIO_BASE + codebooks * CODEBOOK_SIZE
    if cfg.vocab_size < need:
        raise ConfigError(f"Bad model argument vocab_size={cfg.vocab_size}: it must hold the {codebooks} "
                          f"audio codebooks, at least {need} tokens ({args_path}).")
    table = _table(weights_path, safetensors_table)
    layers = {name.split(".")[1] for name in table if name.startswith("layers.")}
    if len(layers) != cfg.num_layers:
        raise WeightsError(f"{weights_path.name} does not match {args_path.name}: the file holds {len(layers)} "
                           f"layers, num_layers is {cfg.num_layers} ({weights_path}).")
    want = cfg.tensor_shapes()
    _compare(table, want, weights_path, args_path.name)
    extra = sorted(set(table) - set(want))
    if extra:
        raise WeightsError(f"Unexpected tensor {short_repr(extra[0])} in {weights_path}: not part of this model.")
    return cfg


def _check_decoder(path: Path, cfg: DecoderConfig) -> None:
    """As ``engine.stages.codec.load_decoder`` will check the loaded tensors, from the table alone."""
    table = _table(path, torch_archive_table)
    if any(name.startswith(("generator.", "state_dict")) for name in table):
        raise WeightsError(f"Decoder weights {path} look like the original training checkpoint; "
                           "use the converted decoder_weights.pt.")
    want = decoder_tensor_shapes(cfg)
    _compare(table, want, path, "decoder_config.yaml")
    extra = sorted(name for name in table if name.startswith("decoder.") and name not in want)
    if extra:
        raise WeightsError(f"Decoder weights {path.name}: unexpected tensor {short_repr(extra[0])} "
                           "(does the decoder_config.yaml match the weights?).")
    for k in range(cfg.num_quantizers):
        first, second = codebook_names(k)
        name = first if first in table or second not in table else second
        _compare(table, {name: (cfg.codebook_size, cfg.dim)}, path, "decoder_config.yaml")
