"""Sampling as small pure functions. Random draws come from a caller's torch.Generator
(on the logits' device), so a seed reproduces a song; nothing here syncs with the host."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def sample_top_k(logits: Tensor, top_k: int, temperature: float, generator: torch.Generator) -> Tensor:
    """logits float32 [.., V] → LongTensor [..] of indices into V.

    temperature 0 or top_k 1 is greedy (argmax). Otherwise sample from the softmax of the
    top_k logits divided by temperature.
    """
    return _sample(logits, top_k, temperature, lambda e: e.exponential_(1.0, generator=generator))


def sample_top_k_rows(logits: Tensor, top_k: int, temperature: float, generators: list[torch.Generator]) -> Tensor:
    """logits float32 [B, V] → LongTensor [B]: row i sampled as ``sample_top_k`` would with
    ``generators[i]`` (the same draws), with top-k and softmax computed for all rows at once."""
    def draw(e: Tensor) -> Tensor:
        for row, generator in enumerate(generators):  # each row its own stream of Exp(1) draws
            e[row].exponential_(1.0, generator=generator)
        return e

    return _sample(logits, top_k, temperature, draw)


def _sample(logits: Tensor, top_k: int, temperature: float, exp_draws: Callable[[Tensor], Tensor]) -> Tensor:
    """One draw per row from the top-k softmax: argmax(p / E) with E ~ Exp(1) has law p, with no host
    sync. ``exp_draws`` fills an empty [.., k] tensor with the Exp(1) draws and returns it."""
    if temperature < 0 or top_k < 1:
        raise ValueError(f"need temperature >= 0 and top_k >= 1, got {temperature}, {top_k}")
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1)
    vals, idx = logits.topk(min(top_k, logits.shape[-1]), dim=-1)  # [..,k]
    probs = torch.softmax(vals.float() / temperature, dim=-1)
    pick = (probs / exp_draws(torch.empty_like(probs))).argmax(dim=-1)  # [..]
    return idx.gather(-1, pick.unsqueeze(-1)).squeeze(-1)
