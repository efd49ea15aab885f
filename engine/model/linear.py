"""Linear layers whose product, for a handful of rows on the CPU, is taken as (W · xᵀ)ᵀ.

Reason (measured, benchmarks/results/batch-cpu.md): MKL's small-M sgemm behind x · Wᵀ costs
about one weight pass per row, so a 2-row batched decode step cost ~1.9× a 1-row step; the
small-N product W · xᵀ does not. Prefill (many rows), one row, and other devices keep F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FEW_ROWS = 16  # above this, x · Wᵀ is a proper GEMM and F.linear is the better path


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [..., in] · weight [out, in]ᵀ (+ bias [out]) → [..., out], as F.linear computes it."""
    rows = x.numel() // max(x.shape[-1], 1)
    if x.device.type != "cpu" or not 2 <= rows <= FEW_ROWS:
        return F.linear(x, weight, bias)
    xt = x.reshape(rows, x.shape[-1]).t()  # [in, rows], a strided view: a contiguous copy is far slower
    out = weight @ xt if bias is None else torch.addmm(bias.unsqueeze(1), weight, xt)  # [out, rows]
    return out.t().reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state_dict names) computed by :func:`linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
