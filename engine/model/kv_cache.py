"""Static, preallocated KV cache with explicit positions (no growth, no per-step GQA expansion)."""

from __future__ import annotations

import torch
from torch import Tensor

from engine.model.config import ModelConfig


class KVCache:
    """k, v: [layers, B, G, max_len, d]. Positions 0..length-1 are filled.

    Each forward writes its q_len new keys at ``length`` in every layer; the model then
    calls ``advance(q_len)`` once. The write offset is a host int, so no device sync.
    """

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, *, device: torch.device | str,
                 dtype: torch.dtype) -> None:
        shape = (cfg.num_layers, batch, cfg.num_kv_groups, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v [B,G,q,d] at positions length..length+q; return this layer's keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def row_view(self, row: int = 0) -> "KVCache":
        """A one-row cache sharing this cache's storage: prefill it once, then ``share_row``."""
        view = KVCache.__new__(KVCache)
        view.k, view.v, view.length = self.k[:, row:row + 1], self.v[:, row:row + 1], self.length
        return view

    def share_row(self, view: "KVCache", row: int = 0) -> None:
        """Take ``view``'s length and copy its filled positions to every row (variations share a prefill)."""
        self.length = view.length
        if self.k.shape[1] > 1:
            n = view.length
            self.k[:, :, :, :n] = self.k[:, row:row + 1, :, :n]
            self.v[:, :, :, :n] = self.v[:, row:row + 1, :, :n]
