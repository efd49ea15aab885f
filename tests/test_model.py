import math

import pytest
import torch

from engine.model.config import ModelConfig
from engine.model.transformer import RMSNorm, Transformer, apply_rope, rope_tables

SPEC_NAMES = ["input_norm.weight"] + [f"attn.{p}_proj.{w}" for p in "qkvo" for w in ("weight", "bias")] + \
    ["post_attn_norm.weight"] + [f"mlp.{p}_proj.{w}" for p in ("gate", "up", "down") for w in ("weight", "bias")]


def cfg_for(heads=8, groups=2, head_dim=8, hidden=32, layers=2, vocab=200, padded=256) -> ModelConfig:
    return ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_groups=groups,
                       head_dim=head_dim, ffn_hidden_size=48, norm_eps=1e-6, rope_base=500000.0,
                       vocab_size=vocab, padded_vocab_size=padded, max_positions=4096)


def make(cfg: ModelConfig, seed=0) -> Transformer:
    torch.manual_seed(seed)
    m = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)  # large enough that a dropped second bias shows
            elif name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return m


# ---------- an independent, loop-heavy reference in float64 ----------
def ref_rms(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def ref_rope(x, pos, base):
    """x [S,d] one head; rotate pair (i, i+d/2) by angle pos * base^(-2i/d)."""
    S, d = x.shape
    a = torch.tensor([[p * base ** (-2 * i / d) for i in range(d // 2)] for p in pos], dtype=torch.float64)
    x1, x2 = x[:, : d // 2], x[:, d // 2:]
    return torch.cat([x1 * a.cos() - x2 * a.sin(), x2 * a.cos() + x1 * a.sin()], -1)


def ref_forward(m: Transformer, tokens: list[int], bias_times: int = 2, group_of=lambda h, N, G: h // (N // G)):
    c = m.cfg
    W = {k: v.double() for k, v in m.state_dict().items()}
    S, d, N, G = len(tokens), c.head_dim, c.num_heads, c.num_kv_groups
    lin = lambda x, p: x @ W[p + ".weight"].T + W[p + ".bias"]
    x = W["embed.weight"][tokens]
    pos = list(range(S))
    for i in range(c.num_layers):
        L = f"layers.{i}."
        n1 = ref_rms(x, W[L + "input_norm.weight"], c.norm_eps)
        q, k, v = lin(n1, L + "attn.q_proj"), lin(n1, L + "attn.k_proj"), lin(n1, L + "attn.v_proj")
        heads = []
        for h in range(N):
            g = group_of(h, N, G)
            qh = ref_rope(q[:, h * d:(h + 1) * d], pos, c.rope_base)
            kh = ref_rope(k[:, g * d:(g + 1) * d], pos, c.rope_base)
            sc = qh @ kh.T / math.sqrt(d)
            sc = sc.masked_fill(torch.ones(S, S).triu(1).bool(), float("-inf"))
            heads.append(torch.softmax(sc, -1) @ v[:, g * d:(g + 1) * d])
        h_ = x + lin(torch.cat(heads, -1), L + "attn.o_proj")
        n2 = ref_rms(h_, W[L + "post_attn_norm.weight"], c.norm_eps)
        gate = n2 @ W[L + "mlp.gate_proj.weight"].T + bias_times * W[L + "mlp.gate_proj.bias"]
        up = n2 @ W[L + "mlp.up_proj.weight"].T + bias_times * W[L + "mlp.up_proj.bias"]
        x = h_ + lin(torch.nn.functional.silu(gate) * up, L + "mlp.down_proj")
    x = ref_rms(x, W["norm.weight"], c.norm_eps)
    return x @ W["lm_head.weight"][: c.vocab_size].T


def test_state_dict_names_are_the_files():
    c = cfg_for(layers=3)
    sd = Transformer(c).state_dict()
    want = ["embed.weight"] + [f"layers.{i}.{n}" for i in range(3) for n in SPEC_NAMES] + ["norm.weight", "lm_head.weight"]
    assert sorted(sd) == sorted(want)
    assert sd["lm_head.weight"].shape == (256, 32) and sd["embed.weight"].shape == (256, 32)
    assert sd["layers.0.attn.k_proj.weight"].shape == (2 * 8, 32)
    assert len(list(Transformer(c).buffers())) == 0


@pytest.mark.parametrize("shape", [(8, 2, 8), (32, 8, 2)])  # heads, groups, head_dim: both h // 4
def test_matches_reference_with_double_bias(shape):
    heads, groups, hd = shape
    m = make(cfg_for(heads=heads, groups=groups, head_dim=hd))
    toks = [3, 17, 150, 9, 0, 42, 199]
    with torch.no_grad():
        got = m(torch.tensor([toks])).double()[0]
    want = ref_forward(m, toks, bias_times=2)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    single = ref_forward(m, toks, bias_times=1)
    assert (got - single).abs().max() > 1e-2  # the second bias matters and is applied


def test_gqa_mapping_is_repeat_interleave_not_modulo():
    m = make(cfg_for(heads=32, groups=8, head_dim=2, layers=1))
    toks = [1, 2, 3, 4, 5]
    with torch.no_grad():
        got = m(torch.tensor([toks])).double()[0]
    assert torch.allclose(got, ref_forward(m, toks), atol=1e-4)
    modulo = ref_forward(m, toks, group_of=lambda h, N, G: h % G)
    assert (got - modulo).abs().max() > 1e-3


def test_rmsnorm_casts_back_before_weight():
    torch.manual_seed(1)
    n = RMSNorm(64, 1e-6)
    with torch.no_grad():
        n.weight.copy_(torch.randn(64).to(torch.bfloat16).float())
    n = n.to(torch.bfloat16)
    x = (torch.randn(8, 64) * 3).to(torch.bfloat16)
    x32 = x.float()
    normed = x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)
    spec = normed.to(torch.bfloat16) * n.weight
    wrong = (normed * n.weight.float()).to(torch.bfloat16)
    got = n(x)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, spec)
    assert not torch.equal(got, wrong)


def test_rope_rotate_half_layout_and_float32_tables():
    torch.manual_seed(2)
    d, base = 8, 500000.0
    x = torch.randn(1, 1, 5, d)
    pos = torch.tensor([0, 1, 7, 300, 4095])
    cos, sin = rope_tables(pos, d, base, torch.float32)
    assert cos.dtype == torch.float32 and cos.shape == (1, 1, 5, d)
    got = apply_rope(x, cos, sin)[0, 0].double()
    want = ref_rope(x[0, 0].double(), pos.tolist(), base)
    assert torch.allclose(got, want, atol=1e-4)
    # an interleaved (GPT-J) layout would rotate pairs (2i, 2i+1): must differ
    inter = x[0, 0].double().view(5, d // 2, 2)
    a = pos.double()[:, None] * base ** (-2 * torch.arange(d // 2).double() / d)
    gj = torch.stack([inter[..., 0] * a.cos() - inter[..., 1] * a.sin(),
                      inter[..., 1] * a.cos() + inter[..., 0] * a.sin()], -1).view(5, d)
    assert not torch.allclose(got, gj, atol=1e-2)


def test_explicit_positions_equal_offset():
    m = make(cfg_for())
    t = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        a = m.hidden(t, 10)
        b = m.hidden(t, torch.tensor([10, 11, 12]))
        c = m.hidden(t, torch.tensor([[10, 11, 12]]))
        z = m.hidden(t, torch.tensor([10, 12, 13]))  # RoPE is relative: only gaps change the result
    assert torch.allclose(a, b) and torch.allclose(a, c) and not torch.allclose(a, z, atol=1e-4)


def test_kv_cache_decode_equals_full_recomputation():
    m = make(cfg_for())
    toks = torch.tensor([[3, 17, 150, 9, 0, 42, 199, 5, 8, 11, 60]])
    with torch.no_grad():
        full = m(toks)  # [1,11,V] causal over the whole sequence
        cache = m.new_cache(1, 16)
        h = m.hidden(toks[:, :3], 0, cache=cache)  # prefill 3
        h2 = m.hidden(toks[:, 3:5], 3, cache=cache, block_size=1)  # a second prefill chunk
        steps = [m.logits_slice(h, 0, 200), m.logits_slice(h2, 0, 200)]
        for p in range(5, 11):
            steps.append(m.logits_slice(m.hidden(toks[:, p:p + 1], p, cache=cache), 0, 200))
    assert cache.length == 11
    assert cache.k.shape == (2, 1, 2, 16, 8)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_logits_slice_rows_and_dtype():
    m = make(cfg_for()).to(torch.bfloat16)
    t = torch.tensor([[1, 2]])
    with torch.no_grad():
        h = m.hidden(t, 0)
        part = m.logits_slice(h, 100, 164)
        full = m.logits_slice(h, 0, 256)
    assert part.dtype == torch.float32 and part.shape == (1, 2, 64)
    assert torch.equal(part, full[..., 100:164])
