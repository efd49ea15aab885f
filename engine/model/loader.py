"""Strict loading of a transformer from ``khala_*.safetensors`` + ``*_megatron_args.json``.

Every tensor name and shape is checked against the config before any data is read.
The module is built on the meta device and each tensor goes straight to the target
device and dtype, so the whole model is never held twice.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from engine.model.config import load_config
from engine.errors import WeightsError
from engine.model.transformer import Transformer


def load_transformer(safetensors_path: Path | str, args_path: Path | str, device: torch.device | str,
                     dtype: torch.dtype) -> Transformer:
    path = Path(safetensors_path)
    cfg = load_config(args_path)
    with torch.device("meta"):
        model = Transformer(cfg)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not path.is_file():
        raise WeightsError(f"Weight file not found: {path}")
    state = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = set(f.keys())
            for name in sorted(want.keys() - names):
                raise WeightsError(f"Tensor {name} is missing from {path}.")
            for name in sorted(names - want.keys()):
                raise WeightsError(f"Unexpected tensor {name} in {path}: not part of this model.")
            for name in want:
                shape = tuple(f.get_slice(name).get_shape())
                if shape != want[name]:
                    raise WeightsError(f"Tensor {name} in {path} has shape {list(shape)}, "
                                       f"expected {list(want[name])} from {Path(args_path).name}.")
            for name in want:
                t = f.get_tensor(name)
                if not t.is_floating_point():
                    raise WeightsError(f"Tensor {name} in {path} has dtype {t.dtype}, expected floating point.")
                state[name] = t.to(device=device, dtype=dtype)
                del t
    except WeightsError:
        raise
    except Exception as e:  # safetensors raises its own error types (or OSError) for truncated/corrupt files
        raise WeightsError(f"Weight file {path} is truncated or corrupt ({type(e).__name__}: {e}). "
                           "Delete it and download it again.") from None
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)
