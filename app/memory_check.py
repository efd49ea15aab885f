"""Asks engine.memory, before a generation starts, whether the song will fit in memory.

Torch-free: the model's shapes come from the config files in the weights folder (so a
small checkpoint is judged by its own size); when they cannot be read, engine.memory
assumes the released model. Any failure here means "no warning", never "no song"."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine import memory
from engine.model.config import load_config
from engine.stages.decoder_config import load_decoder_config
from engine.prompt.template import SUPERRES_CAP
from engine.request import UPSTREAM_TOKEN_CAP, SongRequest, expected_tokens
from engine.weights.folder import WeightPaths

# The device and dtype the pipeline picks when the app passes none; engine.memory
# resolves "auto" the way engine.device does, without importing torch.
DEVICE, DTYPE = "auto", "auto"


@lru_cache(maxsize=4)
def _shapes(folder: str, stamp: float) -> dict[str, Any]:
    paths = WeightPaths.in_folder(Path(folder))
    return {"backbone_cfg": load_config(paths.backbone_args), "superres_cfg": load_config(paths.superres_args),
            "decoder_cfg": load_decoder_config(paths.decoder_config)}


def model_shapes(weights_dir: Path | None) -> dict[str, Any]:
    if weights_dir is None:
        return {}
    try:
        stamp = (Path(weights_dir) / "backbone_megatron_args.json").stat().st_mtime
        return _shapes(str(weights_dir), stamp)
    except Exception:  # noqa: BLE001 - unreadable configs: fall back to the released model's shapes
        return {}


def memory_warning(request: SongRequest, weights_dir: Path | None, prompt_tokens: int | None = None,
                   preview: bool = False) -> str | None:
    """engine.memory's one-line warning for this request on this machine (its variations batched;
    ``preview``: with the rough preview's decoder beside the backbone), or None."""
    extra: dict[str, Any] = dict(model_shapes(weights_dir), preview=preview)
    if prompt_tokens:
        extra["prompt_tokens"] = prompt_tokens
    try:
        return memory.memory_warning(request, DEVICE, DTYPE, **extra)
    except Exception:  # noqa: BLE001 - an estimate that fails must not stop a song
        return None


def continuation_warning(request: SongRequest, weights_dir: Path | None, prefix_frames: int,
                         preview: bool = False) -> str | None:
    """The same warning for a song that keeps ``prefix_frames`` frames of another (extend, regenerate from
    a point): the backbone prefills them with the prompt (2 tokens each) and keeps them in its cache
    beside up to the cap's remaining room of new tokens; super-res and the decoder see the whole song."""
    try:
        prompt = memory.guess_prompt_tokens(request)
        room = max(2, UPSTREAM_TOKEN_CAP - 2 * prefix_frames)
        new = min(request.max_tokens or room, room)
        frames = prefix_frames + min(max(expected_tokens(request.minutes) - 2 * prefix_frames, 2), new) // 2
        extra: dict[str, Any] = dict(model_shapes(weights_dir), prompt_tokens=prompt + 2 * prefix_frames,
                                     superres_prompt_tokens=min(prompt, SUPERRES_CAP), frames=frames, preview=preview)
        return memory.memory_warning(replace(request, max_tokens=new), DEVICE, DTYPE, **extra)
    except Exception:  # noqa: BLE001 - an estimate that fails must not stop a song
        return None


def song_warning(request: SongRequest, weights_dir: Path | None, continuation: Any = None,
                 preview: bool = False) -> str | None:
    """The warning for a song as the app runs it: a new one, or one continuing ``continuation``."""
    if continuation is None:
        return memory_warning(request, weights_dir, preview=preview)
    return continuation_warning(request, weights_dir, continuation.cut_frame, preview=preview)
