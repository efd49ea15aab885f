import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from engine.model import attention as attn_mod
from engine.model.attention import attention


def reference(q, k, v, *, causal=False, q_start=0, pad=None):
    """Plain attention: repeat KV groups per head (h reads group h // (N/G)), full score matrix."""
    N, G = q.shape[1], k.shape[1]
    k = k.repeat_interleave(N // G, dim=1).double()
    v = v.repeat_interleave(N // G, dim=1).double()
    s = q.double() @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    Sq, Sk = q.shape[2], k.shape[2]
    if causal:
        allowed = torch.arange(Sk)[None, :] <= (q_start + torch.arange(Sq))[:, None]
        s = s.masked_fill(~allowed, float("-inf"))
    if pad is not None:
        s = s.masked_fill(pad[:, None, None, :], float("-inf"))
    return (torch.softmax(s, -1) @ v).float()


@pytest.fixture(params=["blocks", "decode"])
def both_paths(request, monkeypatch):
    """Run a test through the query-block path and through the few-query (decode) path."""
    monkeypatch.setattr(attn_mod, "DECODE_QUERIES", 0 if request.param == "blocks" else 1 << 30)
    return request.param


def _qkv(B=2, N=8, G=2, Sq=13, Sk=13, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, N, Sq, d, generator=g), torch.randn(B, G, Sk, d, generator=g),
            torch.randn(B, G, Sk, d, generator=g))


@pytest.mark.parametrize("block", [1, 4, 5, 13, 64])
@pytest.mark.usefixtures("both_paths")
def test_bidirectional_matches_plain(block):
    q, k, v = _qkv()
    assert torch.allclose(attention(q, k, v, block_size=block), reference(q, k, v), atol=1e-5)


@pytest.mark.parametrize("block", [3, 7, 100])
@pytest.mark.usefixtures("both_paths")
def test_key_padding_mask_matches_plain(block):
    q, k, v = _qkv(Sq=11, Sk=11)
    pad = torch.zeros(2, 11, dtype=torch.bool)
    pad[0, 8:] = True
    pad[1, 5:] = True
    got = attention(q, k, v, key_padding_mask=pad, block_size=block)
    assert torch.allclose(got, reference(q, k, v, pad=pad), atol=1e-5)
    # padded keys really have no influence
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 8:] += 100.0
    v2[0, :, 8:] -= 50.0
    assert torch.allclose(attention(q, k2, v2, key_padding_mask=pad, block_size=block)[0], got[0], atol=1e-5)


@pytest.mark.parametrize("block", [1, 4, 6, 32])
@pytest.mark.usefixtures("both_paths")
def test_causal_matches_plain(block):
    q, k, v = _qkv(Sq=14, Sk=14)
    assert torch.allclose(attention(q, k, v, causal=True, block_size=block), reference(q, k, v, causal=True),
                          atol=1e-5)


@pytest.mark.parametrize("block", [2, 5])
@pytest.mark.usefixtures("both_paths")
def test_causal_with_offset_like_a_cache(block):
    q, k, v = _qkv(Sq=5, Sk=12)  # 5 new queries at positions 7..11 over 12 cached keys
    got = attention(q, k, v, causal=True, q_start=7, block_size=block)
    assert torch.allclose(got, reference(q, k, v, causal=True, q_start=7), atol=1e-5)


@pytest.mark.usefixtures("both_paths")
def test_gqa_head_to_group_mapping_real_shape():
    # the real model's 32 heads / 8 groups, tiny dims: head h must read group h // 4
    q, k, v = _qkv(B=1, N=32, G=8, Sq=3, Sk=3, d=4)
    got = attention(q, k, v)
    for h in range(32):
        one = attention(q[:, h:h + 1], k[:, h // 4:h // 4 + 1], v[:, h // 4:h // 4 + 1])
        assert torch.allclose(got[:, h:h + 1], one, atol=1e-6)
    wrong = attention(q[:, 1:2], k[:, 1:2], v[:, 1:2])  # h=1 with group 1 (h % 8 order) differs
    assert not torch.allclose(got[:, 1:2], wrong, atol=1e-3)


def test_block_shrinks_under_score_budget(monkeypatch):
    monkeypatch.setattr(attn_mod, "DECODE_QUERIES", 0)  # 13 queries: the block path
    q, k, v = _qkv()
    want = reference(q, k, v)
    monkeypatch.setattr(attn_mod, "CPU_SCORE_BLOCK", 2 * 8 * 13 * 3)  # forces blocks of 3 rows (SCORE_BUDGET elsewhere)
    seen = []
    orig = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda a, b: (seen.append(a.shape), orig(a, b))[1])
    got = attention(q, k, v, block_size=1024)
    assert torch.allclose(got, want, atol=1e-5)
    assert max(s[2] for s in seen) == 4 * 3  # query rows per block: 4 heads per group x 3 queries


@pytest.mark.usefixtures("both_paths")
def test_half_precision_inputs_keep_dtype():
    q, k, v = (t.to(torch.bfloat16) for t in _qkv())
    out = attention(q, k, v, block_size=4)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), reference(q.float(), k.float(), v.float()), atol=2e-2)


# ---- decode against a float16/bfloat16 cache: K/V read as stored, no float32 copy ----------------

def _narrow(dtype, B=2, N=8, G=2, Sq=1, Sk=300, d=64, seed=1, sharp=3.0):
    q, k, v = _qkv(B, N, G, Sq, Sk, d, seed)
    return (q * sharp).to(dtype), k.to(dtype), v.to(dtype)  # sharp: peaked attention, large scores


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("Sq,Sk,causal,q_start", [(1, 5000, True, 4999), (3, 700, True, 697), (2, 300, False, 0)])
def test_decode_modes_match_plain_attention(dtype, Sq, Sk, causal, q_start, monkeypatch):
    q, k, v = _narrow(dtype, Sq=Sq, Sk=Sk)
    want = reference(q.float(), k.float(), v.float(), causal=causal, q_start=q_start)
    monkeypatch.setattr(attn_mod, "KEY_CHUNK", 2 * 2 * 64 * 1000)  # 1000 keys per chunk: several chunks
    whole = attn_mod.attention(q, k, v, causal=causal, q_start=q_start)  # CPU: the chunked mode
    monkeypatch.setattr(attn_mod, "DECODE_QUERIES", 0)
    once = attn_mod.attention(q, k, v, causal=causal, q_start=q_start)  # K/V converted once (prefill's way)
    assert whole.dtype == dtype and whole.shape == q.shape
    # chunked is the same float32 math, summed in chunks: equal to the once-converted path up to one rounding
    assert torch.allclose(whole.float(), once.float(), atol=0, rtol=2 ** -7)
    tol = 2e-3 if dtype == torch.float16 else 1.6e-2
    assert (whole.float() - want).abs().max() < tol
    stored = attn_mod._few_queries(q, k, v, causal=causal, q_start=q_start, bias=None, mode="stored")
    assert stored.dtype == dtype and (stored.float() - want).abs().max() < 4 * tol  # scores rounded once


def test_native_mode_uses_float32_output_products(monkeypatch):
    """The CUDA mode, emulated on CPU: scores come from bmm(out_dtype=float32) on stored-dtype inputs."""
    q, k, v = _narrow(torch.bfloat16, Sq=2, Sk=257)
    calls = []
    real_bmm = torch.bmm

    def bmm(a, b, *, out_dtype=None):
        calls.append((a.dtype, b.dtype, out_dtype, tuple(a.shape), tuple(b.shape)))
        return real_bmm(a.float(), b.float())
    monkeypatch.setattr(torch, "bmm", bmm)
    got = attn_mod._few_queries(q, k, v, causal=True, q_start=255, bias=None, mode="native")
    assert calls == [(torch.bfloat16, torch.bfloat16, torch.float32, (2 * 2, 4 * 2, 64), (2 * 2, 64, 257))]
    want = reference(q.float(), k.float(), v.float(), causal=True, q_start=255)
    assert (got.float() - want).abs().max() < 1.6e-2


def test_decode_mode_per_device(monkeypatch):
    assert attn_mod._decode_mode(torch.device("cpu"), torch.float16) == "chunked"
    assert attn_mod._has_f32_out_bmm(torch.device("cpu"), torch.float16) is False  # no such CPU kernel
    monkeypatch.setitem(attn_mod._F32_OUT_BMM, ("mps", torch.float16), False)
    monkeypatch.setitem(attn_mod._F32_OUT_BMM, ("cuda", torch.bfloat16), True)
    assert attn_mod._decode_mode(torch.device("mps"), torch.float16) == "stored"
    assert attn_mod._decode_mode(torch.device("cuda"), torch.bfloat16) == "native"


def test_probe_refuses_a_half_precision_result(monkeypatch):
    """A backend that accepts out_dtype but rounds through the stored dtype is not 'native'."""
    monkeypatch.setattr(attn_mod, "_F32_OUT_BMM", {})
    real_bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda a, b, *, out_dtype=None: real_bmm(a, b).to(out_dtype))
    assert attn_mod._has_f32_out_bmm(torch.device("cpu"), torch.float16) is False
    monkeypatch.setattr(attn_mod, "_F32_OUT_BMM", {})
    monkeypatch.setattr(torch, "bmm", lambda a, b, *, out_dtype=None: real_bmm(a.float(), b.float()))
    assert attn_mod._has_f32_out_bmm(torch.device("cpu"), torch.float16) is True


class _LargestFloat32(TorchDispatchMode):
    """Records the largest float32 storage any op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_step_makes_no_cache_sized_float32_tensor(dtype):
    """One decode step of a small model against a long cache (262 144 positions, 128 MiB):
    every float32 tensor made during the step is far smaller than the cache (the old code
    converted each layer's K and V to float32: 64 MiB each)."""
    from engine.model.config import ModelConfig
    from engine.model.transformer import Transformer
    cfg = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_groups=2, head_dim=32, ffn_hidden_size=128,
                      norm_eps=1e-6, rope_base=5e5, vocab_size=512, padded_vocab_size=512, max_positions=1 << 19)
    torch.manual_seed(0)
    model = Transformer(cfg).to(dtype).eval().requires_grad_(False)
    S = 1 << 18
    cache = model.new_cache(1, S)
    cache.k.normal_()
    cache.v.normal_()
    cache_bytes = 2 * cache.k.numel() * cache.k.element_size()
    cache.advance(S - 1)  # positions 0..S-2 filled: this step writes and reads the last one
    with torch.inference_mode(), _LargestFloat32() as seen:
        h = model.hidden(torch.tensor([[7]]), S - 1, cache=cache)
    assert h.shape == (1, 1, 64) and torch.isfinite(h.float()).all()
    assert cache.length == S
    assert 0 < seen.largest <= cache_bytes / 16, (seen.largest, cache_bytes)
