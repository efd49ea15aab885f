"""Exact attention over blocks of queries, with grouped (GQA) keys and bounded memory.

One implementation serves every pass: bidirectional super-res passes (optionally with a
key padding mask), causal prefill and one-token decode against a static KV cache. It is
plain matmul → float32 softmax → matmul, never a fused kernel (MPS's fused attention
returns garbage past ~18k tokens). Queries are reshaped to [B, G, R·q, d] so each KV
group is read once and never repeated per head. Scores for one block are at most
``SCORE_BUDGET`` float32 elements, so memory is O(block·S) whatever the length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCORE_BUDGET = 1 << 28  # float32 elements of one block's scores: 1 GiB


def attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, q_start: int = 0,
              key_padding_mask: Tensor | None = None, block_size: int = 1024) -> Tensor:
    """q [B,N,Sq,d] (N heads), k/v [B,G,Sk,d] (G groups, head h reads group h // (N/G)).

    causal: query i sits at absolute position q_start + i and sees keys 0..q_start+i.
    key_padding_mask: bool [B,Sk], True marks a pad key (ignored).
    Returns [B,N,Sq,d] in q's dtype; scores, softmax and products are float32.
    """
    B, N, Sq, d = q.shape
    G, Sk = k.shape[1], k.shape[2]
    R = N // G
    dtype = q.dtype
    q5 = (q.float() * (1.0 / math.sqrt(d))).view(B, G, R, Sq, d)
    kT = k.float().transpose(-1, -2)  # [B,G,d,Sk], converted once per call
    v32 = v.float()
    bias = None
    if key_padding_mask is not None:
        bias = torch.zeros(B, Sk, dtype=torch.float32, device=q.device)
        bias = bias.masked_fill(key_padding_mask, -torch.inf).view(B, 1, 1, 1, Sk)
    block = max(1, min(block_size, SCORE_BUDGET // max(1, B * N * Sk)))
    out = torch.empty(B, G, R, Sq, d, dtype=dtype, device=q.device)
    for s0 in range(0, Sq, block):
        s1 = min(Sq, s0 + block)
        n = s1 - s0
        hi = min(Sk, q_start + s1) if causal else Sk  # keys past the block's last query are masked anyway
        qb = q5[:, :, :, s0:s1].reshape(B, G, R * n, d)
        sc = torch.matmul(qb, kT[..., :hi]).view(B, G, R, n, hi)  # [B,G,R,n,hi]
        if bias is not None:
            sc.add_(bias[..., :hi])
        if causal:
            qpos = torch.arange(q_start + s0, q_start + s1, device=q.device).view(n, 1)
            kpos = torch.arange(hi, device=q.device).view(1, hi)
            sc.masked_fill_(kpos > qpos, -torch.inf)
        # softmax in place: one score buffer per block is the whole transient memory
        sc.sub_(sc.amax(dim=-1, keepdim=True)).exp_()
        sc.div_(sc.sum(dim=-1, keepdim=True))
        out[:, :, :, s0:s1] = torch.matmul(sc.view(B, G, R * n, hi), v32[:, :, :hi]).view(B, G, R, n, d).to(dtype)
        del sc  # before the next block's scores are allocated
    return out.view(B, N, Sq, d)
