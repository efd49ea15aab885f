import math

import pytest
import torch

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


def _qkv(B=2, N=8, G=2, Sq=13, Sk=13, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, N, Sq, d, generator=g), torch.randn(B, G, Sk, d, generator=g),
            torch.randn(B, G, Sk, d, generator=g))


@pytest.mark.parametrize("block", [1, 4, 5, 13, 64])
def test_bidirectional_matches_plain(block):
    q, k, v = _qkv()
    assert torch.allclose(attention(q, k, v, block_size=block), reference(q, k, v), atol=1e-5)


@pytest.mark.parametrize("block", [3, 7, 100])
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
def test_causal_matches_plain(block):
    q, k, v = _qkv(Sq=14, Sk=14)
    assert torch.allclose(attention(q, k, v, causal=True, block_size=block), reference(q, k, v, causal=True),
                          atol=1e-5)


@pytest.mark.parametrize("block", [2, 5])
def test_causal_with_offset_like_a_cache(block):
    q, k, v = _qkv(Sq=5, Sk=12)  # 5 new queries at positions 7..11 over 12 cached keys
    got = attention(q, k, v, causal=True, q_start=7, block_size=block)
    assert torch.allclose(got, reference(q, k, v, causal=True, q_start=7), atol=1e-5)


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
    q, k, v = _qkv()
    want = reference(q, k, v)
    monkeypatch.setattr(attn_mod, "SCORE_BUDGET", 2 * 8 * 13 * 3)  # forces blocks of 3 rows
    seen = []
    orig = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda a, b: (seen.append(a.shape), orig(a, b))[1])
    got = attention(q, k, v, block_size=1024)
    assert torch.allclose(got, want, atol=1e-5)
    assert max(s[2] for s in seen) == 4 * 3  # query rows per block: 4 heads per group x 3 queries


def test_half_precision_inputs_keep_dtype():
    q, k, v = (t.to(torch.bfloat16) for t in _qkv())
    out = attention(q, k, v, block_size=4)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), reference(q.float(), k.float(), v.float()), atol=2e-2)
