"""Multi-codebook token embedding (SPEC §3).

Pad id is -1: looked up as PAD_LOOKUP and zeroed. Inputs [B,S], [B,S,1] or [B,S,C≥2];
for C ≥ 2 a row is audio when any of columns 1..C-1 is not a pad, and then sums the
embeddings of all its non-pad columns; a text row is the embedding of column 0. Since a
text row's columns 1..C-1 are all pads, both cases are "sum of the non-pad columns".
Columns are gathered one at a time, so no [B,S,C,H] tensor is ever built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.prompt.special_tokens import PAD_LOOKUP

PAD_ID = -1


class MultiCodebookEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim))
        if not self.weight.is_meta:  # (normal_ on meta pulls in sympy: seconds of import)
            nn.init.normal_(self.weight)

    def _lookup(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        pad = ids < 0
        safe = torch.where(pad, torch.full_like(ids, PAD_LOOKUP), ids)
        return F.embedding(safe, self.weight), pad

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() == 3 and tokens.shape[-1] == 1:
            tokens = tokens[..., 0]
        if tokens.dim() == 2:  # [B,S]
            x, pad = self._lookup(tokens)
            return x.masked_fill(pad.unsqueeze(-1), 0)
        if tokens.dim() != 3:
            raise ValueError(f"tokens must be [B,S] or [B,S,C], got {tuple(tokens.shape)}")
        x = None
        for c in range(tokens.shape[-1]):
            xc, pad = self._lookup(tokens[..., c])
            xc = xc.masked_fill(pad.unsqueeze(-1), 0)
            x = xc if x is None else x + xc
        return x
