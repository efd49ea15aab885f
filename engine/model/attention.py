"""Exact attention over blocks of queries, with grouped (GQA) keys and bounded memory.

One implementation serves every pass: bidirectional super-res passes (optionally with a
key padding mask), causal prefill and one-token decode against a static KV cache. It is
plain matmul → float32 softmax → matmul, never a fused kernel (MPS's fused attention
returns garbage past ~18k tokens). Queries are reshaped to [B, G, R·q, d] so each KV
group is read once and never repeated per head. Scores for one block are at most
``SCORE_BUDGET`` float32 elements (``CPU_SCORE_BLOCK`` on the CPU, sized for its cache), so
memory is O(block·S) whatever the length.

Decode (at most ``DECODE_QUERIES`` queries) never makes a float32 copy of a float16/bfloat16
cache: K and V are read as stored, and the whole step is three products and one softmax
(see ``_few_queries``). Many queries (prefill, super-res) convert K and V to float32 once per
call, a cost shared by every query.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCORE_BUDGET = 1 << 28  # float32 elements of one block's scores: 1 GiB
# On the CPU a block's scores should stay in the last-level cache while the softmax passes over
# them: 16 MiB blocks (S = 3 917, 32 heads: 33 queries) made a real-width super-res layer's
# attention 1.5x faster than 1024-query blocks (4.0 → 2.7 s, one thread, 32 MiB L3 here).
CPU_SCORE_BLOCK = 1 << 22
DECODE_QUERIES = 16  # calls with at most this many queries take the decode path
KEY_CHUNK = 1 << 20  # CPU decode: float32 elements of the K or V slice converted at a time (4 MiB)

_F32_OUT_BMM: dict[tuple[str, torch.dtype], bool] = {}


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
    bias = None
    if key_padding_mask is not None:
        bias = torch.zeros(B, Sk, dtype=torch.float32, device=q.device)
        bias = bias.masked_fill(key_padding_mask, -torch.inf).view(B, 1, 1, 1, Sk)
    if Sq <= DECODE_QUERIES:
        return _few_queries(q, k, v, causal=causal, q_start=q_start, bias=bias)
    q5 = (q.float() * (1.0 / math.sqrt(d))).view(B, G, R, Sq, d)
    kT = k.float().transpose(-1, -2)  # [B,G,d,Sk], converted once per call
    v32 = v.float()
    budget = CPU_SCORE_BLOCK if q.device.type == "cpu" else SCORE_BUDGET
    block = max(1, min(block_size, budget // max(1, B * N * Sk)))
    out = torch.empty(B, G, R, Sq, d, dtype=dtype, device=q.device)
    for s0 in range(0, Sq, block):
        s1 = min(Sq, s0 + block)
        n = s1 - s0
        hi = min(Sk, q_start + s1) if causal else Sk  # keys past the block's last query are masked anyway
        qb = q5[:, :, :, s0:s1].reshape(B, G, R * n, d)
        sc = torch.matmul(qb, kT[..., :hi]).view(B, G, R, n, hi)  # [B,G,R,n,hi]
        _mask(sc, bias, causal, q_start + s0)
        # softmax in place: one score buffer per block is the whole transient memory
        sc.sub_(sc.amax(dim=-1, keepdim=True)).exp_()
        sc.div_(sc.sum(dim=-1, keepdim=True))
        out[:, :, :, s0:s1] = torch.matmul(sc.view(B, G, R * n, hi), v32[:, :, :hi]).view(B, G, R, n, d).to(dtype)
        del sc  # before the next block's scores are allocated
    return out.view(B, N, Sq, d)


def _mask(sc: Tensor, bias: Tensor | None, causal: bool, first_query: int) -> None:
    """In place on float32 scores [B,G,R,n,hi] of queries first_query.. : -inf where a key is hidden."""
    n, hi = sc.shape[-2], sc.shape[-1]
    if bias is not None:
        sc.add_(bias[..., :hi])
    if causal:
        qpos = torch.arange(first_query, first_query + n, device=sc.device).view(n, 1)
        kpos = torch.arange(hi, device=sc.device).view(1, hi)
        sc.masked_fill_(kpos > qpos, -torch.inf)


def _few_queries(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, q_start: int, bias: Tensor | None,
                 mode: str | None = None) -> Tensor:
    """Decode: few queries against the whole K/V, without a float32 copy of a narrower K/V.

    Scores [B,G,R·Sq,Sk] and the softmax are float32 (small: N·Sq·Sk elements, a few MB at 20k
    positions, so one out-of-place softmax replaces the prefill's in-place sequence: fewer passes
    and fewer parallel regions per token, which a busy CPU makes expensive). How K/V are read:
    * "float32": as they are (a float32 cache);
    * "native" (a backend with float32-output half matmuls, e.g. CUDA): q·Kᵀ in the stored dtype
      into float32 scores; P·V with the probabilities in the stored dtype (as FlashAttention's
      second product), both accumulated in float32 by the backend;
    * "stored" (other GPUs, e.g. MPS): the same, but the scores come back in the stored dtype
      and only that small score block is converted to float32;
    * "chunked" (CPU, whose half-precision matmuls are slow): K and V converted KEY_CHUNK
      elements at a time into float32 (a cache-sized slice, not the cache); exact float32 math.
    """
    B, N, Sq, d = q.shape
    G, Sk = k.shape[1], k.shape[2]
    R = N // G
    dtype = q.dtype
    mode = mode or ("float32" if k.dtype == torch.float32 else _decode_mode(q.device, dtype))
    scale = 1.0 / math.sqrt(d)
    q4 = q.view(B, G, R, Sq, d).reshape(B, G, R * Sq, d)
    if mode == "float32":
        sc = torch.matmul(q4.float() * scale, k.transpose(-1, -2))
    elif mode == "chunked":
        q32 = q4.float() * scale
        sc = torch.empty(B, G, R * Sq, Sk, dtype=torch.float32, device=q.device)
        step = max(1, KEY_CHUNK // (B * G * d))
        for c0 in range(0, Sk, step):
            c1 = min(Sk, c0 + step)
            sc[..., c0:c1] = torch.matmul(q32, k[:, :, c0:c1].float().transpose(-1, -2))
    else:
        qs = (q4.float() * scale).to(dtype)  # exact for power-of-4 head dims (64: × 1/8)
        if mode == "native":
            sc = torch.bmm(qs.flatten(0, 1), k.flatten(0, 1).transpose(1, 2), out_dtype=torch.float32)
        else:
            sc = torch.matmul(qs, k.transpose(-1, -2))  # stored dtype, converted by the softmax
        sc = sc.view(B, G, R * Sq, Sk)
    if bias is not None or (causal and Sk > q_start + 1):  # a plain decode step (Sk = q_start + 1) masks nothing
        sc = sc.float()
        _mask(sc.view(B, G, R, Sq, Sk), bias, causal, q_start)
    p = torch.softmax(sc, dim=-1, dtype=torch.float32)  # one pass over a small [B,G,R·Sq,Sk] block
    del sc
    if mode == "float32":
        o = torch.matmul(p, v).to(dtype)
    elif mode == "chunked":
        acc = torch.zeros(B, G, R * Sq, d, dtype=torch.float32, device=q.device)
        for c0 in range(0, Sk, step):
            c1 = min(Sk, c0 + step)
            acc.add_(torch.matmul(p[..., c0:c1], v[:, :, c0:c1].float()))
        o = acc.to(dtype)
    else:
        o = torch.matmul(p.to(dtype), v)
    return o.view(B, G, R, Sq, d).reshape(B, N, Sq, d)


def _decode_mode(device: torch.device, dtype: torch.dtype) -> str:
    if device.type == "cpu":
        return "chunked"
    return "native" if _has_f32_out_bmm(device, dtype) else "stored"


def _has_f32_out_bmm(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this backend multiplies ``dtype`` matrices into float32 (torch.bmm(out_dtype=)),
    checked once per device type and dtype on a product whose exact float32 value is known."""
    key = (device.type, dtype)
    if key not in _F32_OUT_BMM:
        a = torch.full((1, 1, 64), 1.0 + 2.0 ** -7, dtype=dtype, device=device)  # exact in fp16 and bf16
        b = torch.full((1, 64, 1), 1.0 + 2.0 ** -7, dtype=dtype, device=device)
        want = 64 * (1.0 + 2.0 ** -7) ** 2  # 65.00390625: rounds to 65 in fp16 and bf16
        try:
            got = torch.bmm(a, b, out_dtype=torch.float32)
            ok = got.dtype == torch.float32 and abs(float(got) - want) < 1e-4
        except (RuntimeError, TypeError, NotImplementedError):
            ok = False
        _F32_OUT_BMM[key] = ok
    return _F32_OUT_BMM[key]
