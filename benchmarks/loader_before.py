"""The engine's transformer loader before issue 12, kept only as the "before" of benchmarks/load_peak.py:
safetensors' ``get_tensor`` on the memory-mapped file, converted tensor by tensor; every page read
stays mapped (resident, counted in the process) until the file is closed at the end of the load.
No name/shape checks here: the benchmark's files are right by construction."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from engine.model.config import load_config
from engine.model.transformer import Transformer


def load_transformer_mapped(path: Path | str, args_path: Path | str, device: str, dtype: torch.dtype) -> Transformer:
    with torch.device("meta"):
        model = Transformer(load_config(args_path))
    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for name in model.state_dict():
            t = f.get_tensor(name)
            state[name] = t.to(device=device, dtype=dtype)
            del t
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)
