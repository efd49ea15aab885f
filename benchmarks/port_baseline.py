"""A port-style inference baseline: the same model and the same numbers as the engine, computed
the way the community Mac port does it (issue 6; the port's article in ../shared/seeds/).

It drives the engine's own ``Transformer`` (same weights; it calls the submodules: projections,
norms, MLP, lm_head), so only the inference strategy differs. The avoidable costs reproduced:

* backbone: a KV cache grown by ``torch.cat`` every step; K/V re-expanded to every query
  head (``repeat_interleave``) every step; logits over the whole padded vocab every step
  (then sliced); a host sync per token (``.item()`` on the sampled token, which then goes
  back to the device as a new tensor);
* super-res: the [B, S, C, H] embedding tensor materialised on every pass; K/V expanded per
  head; query-chunked attention that converts K and V to float32 again for every query
  block (``copy=True``: in float32 the cast would be free, while the port in fp16 pays a real
  conversion; the copy stands in for its memory traffic and its transient tensor).

Sampling uses the engine's ``sample_top_k`` and, in the backbone, the engine's slot
restriction (EOS + the slot's 1024 codes, picked out of the full logits), so that both
produce the same tokens; the restriction itself is not one of the costs compared.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.stages.backbone import CODEBOOK, EOS, Q0, Q1
from engine.model.embedding import PAD_ID, PAD_LOOKUP
from engine.model.transformer import Attention, Transformer, apply_rope, rope_tables
from engine.model.sampling import sample_top_k


class GrowingKVCache:
    """Per-layer K/V [B, G, L, d], grown by concatenation at every step (no preallocation)."""

    def __init__(self, layers: int) -> None:
        self.k: list[Tensor | None] = [None] * layers
        self.v: list[Tensor | None] = [None] * layers

    @property
    def length(self) -> int:
        return 0 if self.k[0] is None else self.k[0].shape[2]

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k[layer] is None:
            self.k[layer], self.v[layer] = k, v
        else:
            self.k[layer] = torch.cat([self.k[layer], k], dim=2)
            self.v[layer] = torch.cat([self.v[layer], v], dim=2)
        return self.k[layer], self.v[layer]


def embed_materialised(model: Transformer, tokens: Tensor) -> Tensor:
    """The SPEC §3 embedding computed through a [B, S, C, H] tensor (the port's way)."""
    w = model.embed.weight
    if tokens.dim() == 3 and tokens.shape[-1] == 1:
        tokens = tokens[..., 0]
    if tokens.dim() == 2:
        pad = tokens == PAD_ID
        return F.embedding(tokens.masked_fill(pad, PAD_LOOKUP), w) * (~pad).unsqueeze(-1)
    pad = tokens == PAD_ID  # [B,S,C]
    audio = (~pad[..., 1:]).any(dim=-1)  # [B,S]
    text_ids = tokens[..., 0].masked_fill(audio | pad[..., 0], PAD_LOOKUP)
    text = F.embedding(text_ids, w) * ((~audio) & (~pad[..., 0])).unsqueeze(-1)
    every = F.embedding(tokens.masked_fill(pad, PAD_LOOKUP), w)  # [B,S,C,H], built on every pass
    every = every * (~pad).unsqueeze(-1)
    return text + every.sum(dim=2) * audio.unsqueeze(-1)


def chunked_attention_recast(q: Tensor, k: Tensor, v: Tensor, block: int,
                             key_padding_mask: Tensor | None = None) -> Tensor:
    """Bidirectional attention over query blocks; k/v [B,N,Sk,d] (already expanded per head),
    converted to float32 anew for every block."""
    B, N, S, d = q.shape
    scale = 1.0 / math.sqrt(d)
    out = torch.empty_like(q)
    for s0 in range(0, S, block):
        s1 = min(S, s0 + block)
        k32 = k.to(torch.float32, copy=True)  # per block, as the port does
        v32 = v.to(torch.float32, copy=True)
        sc = torch.matmul(q[:, :, s0:s1].float(), k32.transpose(-1, -2)) * scale
        if key_padding_mask is not None:
            sc = sc.masked_fill(key_padding_mask.view(B, 1, 1, -1), -torch.inf)
        out[:, :, s0:s1] = torch.matmul(torch.softmax(sc, dim=-1), v32).to(q.dtype)
        del k32, v32, sc
    return out


def _attention(attn: Attention, x: Tensor, cos: Tensor, sin: Tensor, layer: int,
               cache: GrowingKVCache | None, causal: bool, mask: Tensor | None, block: int) -> Tensor:
    B, S, _ = x.shape
    N, G, d = attn.n_heads, attn.n_groups, attn.head_dim
    q = attn.q_proj(x).view(B, S, N, d).transpose(1, 2)
    k = attn.k_proj(x).view(B, S, G, d).transpose(1, 2)
    v = attn.v_proj(x).view(B, S, G, d).transpose(1, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if cache is not None:
        k, v = cache.append(layer, k, v)
    k, v = k.repeat_interleave(N // G, dim=1), v.repeat_interleave(N // G, dim=1)  # every call
    if causal:  # backbone: the port's plain SDPA on the expanded heads (prefill causal, decode sees all)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=S > 1)
    else:  # super-res: the port's query-chunked attention
        o = chunked_attention_recast(q, k, v, block, mask)
    return attn.o_proj(o.transpose(1, 2).reshape(B, S, N * d))


def port_hidden(model: Transformer, tokens: Tensor, start: int = 0, *, cache: GrowingKVCache | None = None,
                causal: bool = True, key_padding_mask: Tensor | None = None, block: int = 1024) -> Tensor:
    """Final-normed hidden [B,S,H], as ``Transformer.hidden`` but computed the port's way."""
    x = embed_materialised(model, tokens)
    S = x.shape[1]
    cos, sin = rope_tables(torch.arange(start, start + S, device=x.device), model.cfg.head_dim,
                           model.cfg.rope_base, x.dtype)
    for i, lyr in enumerate(model.layers):
        h = x + _attention(lyr.attn, lyr.input_norm(x), cos, sin, i, cache, causal, key_padding_mask, block)
        x = h + lyr.mlp(lyr.post_attn_norm(h))
    return model.norm(x)


def port_generate(model: Transformer, prompt_ids: list[int], *, max_new_tokens: int, temperature: float,
                  top_k: int, generator: torch.Generator,
                  on_token: Callable[[int, int], None] | None = None, report_every: int = 8,
                  full_vocab: bool = True) -> list[int]:
    """Backbone decode, port style. Returns the tokens before EOS (ints; one host sync each).

    full_vocab=False computes only the slot's 1025 lm_head rows (an ablation: every port cost
    but the whole-vocab logits), to separate that cost, whose share depends on the width."""
    dev = model.lm_head.weight.device
    V = model.cfg.vocab_size
    ids = [torch.cat([torch.tensor([EOS], device=dev), torch.arange(lo, lo + CODEBOOK, device=dev)])
           for lo in (Q0, Q1)]
    rows = None if full_vocab else [model.lm_head.weight[i] for i in ids]
    cache = GrowingKVCache(model.cfg.num_layers)
    P = len(prompt_ids)
    h = port_hidden(model, torch.tensor([prompt_ids], device=dev), 0, cache=cache)[:, -1]
    out: list[int] = []
    for n in range(max_new_tokens):
        slot = ids[n % 2]
        if rows is None:
            logits = model.lm_head(h)[0, :V].float()[slot]  # the whole padded vocab, then sliced
        else:
            logits = F.linear(h[0], rows[n % 2]).float()
        tok = int(slot[sample_top_k(logits, top_k, temperature, generator)].item())  # host sync
        if tok == EOS:
            break
        out.append(tok)
        if on_token is not None and (n + 1) % report_every == 0:
            on_token(n + 1, max_new_tokens)
        if n + 1 < max_new_tokens:
            step = torch.tensor([[tok]], device=dev)  # back to the device
            h = port_hidden(model, step, P + n, cache=cache)[:, -1]
    return out


def port_superres_pass(model: Transformer, tokens: Tensor, idx: int, text_len: int, *, top_k: int,
                       generator: torch.Generator, block: int = 1024,
                       key_padding_mask: Tensor | None = None) -> Tensor:
    """One super-res pass on tokens [1,S,64] (marker already set): sampled ids of column idx for
    every row [1,S] (the caller keeps rows text_len..); logits for all S rows, as the port."""
    h = port_hidden(model, tokens[:, :, :idx], 0, causal=False, key_padding_mask=key_padding_mask, block=block)
    base = Q0 + CODEBOOK * idx
    logits = torch.matmul(h, model.lm_head.weight[base:base + CODEBOOK].t()).float()
    return sample_top_k(logits, top_k, 1.0, generator) + base
