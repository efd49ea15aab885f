"""The Khala transformer (backbone and super-res share it): SPEC §3.

Pre-norm layers: RMSNorm → GQA attention with rotate-half RoPE → residual; RMSNorm →
SwiGLU MLP whose gate and up biases are added twice (as trained) → residual. Final
RMSNorm, then an untied lm_head without bias. ``state_dict()`` names are the file's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.model.attention import attention
from engine.model.config import ModelConfig
from engine.model.embedding import MultiCodebookEmbedding
from engine.model.kv_cache import KVCache
from engine.model.linear import Linear, linear


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.to(x.dtype) * self.weight  # cast back first, then scale (as trained)


def rope_tables(positions: Tensor, head_dim: int, base: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """positions [B,S] or [S] (absolute) → cos, sin [B|1, 1, S, d] in ``dtype``, computed in float32."""
    i = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device)
    inv_freq = 1.0 / (base ** (i / head_dim))  # base^(-2i/d)
    f = positions.to(torch.float32).unsqueeze(-1) * inv_freq  # [..,S,d/2]
    emb = torch.cat([f, f], dim=-1)
    if emb.dim() == 2:
        emb = emb.unsqueeze(0)
    return emb.cos().to(dtype).unsqueeze(1), emb.sin().to(dtype).unsqueeze(1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half (GPT-NeoX) layout: pairs (i, i + d/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        H, N, G, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_groups, cfg.head_dim
        self.n_heads, self.n_groups, self.head_dim = N, G, d
        self.q_proj = Linear(H, N * d)
        self.k_proj = Linear(H, G * d)
        self.v_proj = Linear(H, G * d)
        self.o_proj = Linear(N * d, H)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, *, layer: int, cache: KVCache | None,
                causal: bool, key_padding_mask: Tensor | None, block_size: int) -> Tensor:
        B, S, _ = x.shape
        d = self.head_dim
        q = self.q_proj(x).view(B, S, self.n_heads, d).transpose(1, 2)  # [B,N,S,d]
        k = self.k_proj(x).view(B, S, self.n_groups, d).transpose(1, 2)  # [B,G,S,d]
        v = self.v_proj(x).view(B, S, self.n_groups, d).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q_start = 0
        if cache is not None:
            q_start = cache.length
            k, v = cache.write(layer, k, v)
        o = attention(q, k, v, causal=causal, q_start=q_start, key_padding_mask=key_padding_mask,
                      block_size=block_size)
        return self.o_proj(o.transpose(1, 2).reshape(B, S, self.n_heads * d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        H, F_ = cfg.hidden_size, cfg.ffn_hidden_size
        self.gate_proj = Linear(H, F_)
        self.up_proj = Linear(H, F_)
        self.down_proj = Linear(F_, H)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.gate_proj(x) + self.gate_proj.bias  # W x + 2b: the trained model adds fc1's bias twice
        up = self.up_proj(x) + self.up_proj.bias
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, **kw) -> Tensor:
        h = x + self.attn(self.input_norm(x), cos, sin, **kw)
        return h + self.mlp(self.post_attn_norm(h))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = MultiCodebookEmbedding(cfg.padded_vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.padded_vocab_size, bias=False)

    def hidden(self, tokens: Tensor, positions: Tensor | int = 0, *, cache: KVCache | None = None,
               causal: bool = True, key_padding_mask: Tensor | None = None, block_size: int = 1024) -> Tensor:
        """tokens [B,S] or [B,S,C] (pad -1) → final-normed hidden [B,S,H].

        positions: absolute RoPE positions, [S] or [B,S], or an int p meaning p..p+S-1.
        With ``cache``, keys are stored at cache.length.. and the cache advances by S.
        key_padding_mask: bool [B,S_keys], True marks a pad key.
        """
        S = tokens.shape[1]
        x = self.embed(tokens)
        if isinstance(positions, int):
            positions = torch.arange(positions, positions + S, device=x.device)
        cos, sin = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_base, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, layer=i, cache=cache, causal=causal, key_padding_mask=key_padding_mask,
                      block_size=block_size)
        if cache is not None:
            cache.advance(S)
        return self.norm(x)

    def logits_slice(self, hidden: Tensor, start: int, stop: int) -> Tensor:
        """float32 logits of token ids start..stop-1 only: hidden · lm_head.weight[start:stop]ᵀ."""
        return linear(hidden, self.lm_head.weight[start:stop]).float()

    def forward(self, tokens: Tensor, positions: Tensor | int = 0, **kw) -> Tensor:
        return self.logits_slice(self.hidden(tokens, positions, **kw), 0, self.cfg.vocab_size)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        w = self.lm_head.weight
        return KVCache(self.cfg, batch, max_len, device=w.device, dtype=w.dtype)
