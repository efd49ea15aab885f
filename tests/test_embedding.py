import pytest
import torch
import torch.nn.functional as F

from engine.model.embedding import PAD_LOOKUP, MultiCodebookEmbedding

V, H = PAD_LOOKUP + 50, 6


@pytest.fixture(scope="module")
def emb():
    torch.manual_seed(0)
    return MultiCodebookEmbedding(V, H)


def ref_row(W, ids):
    """Spec §3 by hand for one row of C columns."""
    C = len(ids)
    if C == 1:
        return torch.zeros(H) if ids[0] < 0 else W[ids[0]]
    audio = any(i >= 0 for i in ids[1:])
    cols = ids if audio else ids[:1]
    out = torch.zeros(H)
    for i in cols:
        if i >= 0:
            out = out + W[i]
    return out


def test_2d_plain_lookup_pads_zeroed(emb):
    t = torch.tensor([[5, -1, PAD_LOOKUP + 3], [-1, 0, 17]])
    got = emb(t)
    assert got.shape == (2, 3, H)
    for b in range(2):
        for s in range(3):
            assert torch.equal(got[b, s], ref_row(emb.weight.data, [int(t[b, s])]))
    assert torch.equal(got[0, 1], torch.zeros(H))


def test_pad_is_looked_up_as_128004_then_zeroed(emb, monkeypatch):
    seen = []
    orig = F.embedding
    monkeypatch.setattr(F, "embedding", lambda ids, w, *a, **k: (seen.append(ids.clone()), orig(ids, w))[1])
    emb(torch.tensor([[-1, 3]]))
    assert seen[0].tolist() == [[PAD_LOOKUP, 3]]
    assert PAD_LOOKUP == 128004  # <|finetune_right_pad_id|>, SPEC §3


def test_3d_single_column_equals_2d(emb):
    t = torch.tensor([[5, -1, 9]])
    assert torch.equal(emb(t.unsqueeze(-1)), emb(t))


def test_multi_column_audio_and_text_rows(emb):
    rows = [[7, -1, -1], [-1, -1, -1], [100, 200, -1], [100, -1, 300], [-1, 200, 300], [PAD_LOOKUP + 1, 5, 6]]
    t = torch.tensor([rows])  # [1,6,3]
    got = emb(t)
    W = emb.weight.data
    for s, ids in enumerate(rows):
        assert torch.allclose(got[0, s], ref_row(W, ids), atol=1e-6), ids
    # a text row ignores nothing but column 0; an audio row sums every non-pad column
    assert torch.allclose(got[0, 2], W[100] + W[200], atol=1e-6)
    assert torch.allclose(got[0, 4], W[200] + W[300], atol=1e-6)


def test_super_res_width_64_never_builds_a_4d_tensor(emb, monkeypatch):
    t = torch.randint(0, 1000, (1, 5, 64))
    t[0, 0, 1:] = -1
    seen = []
    orig = F.embedding
    monkeypatch.setattr(F, "embedding", lambda ids, w, *a, **k: (seen.append(ids.dim()), orig(ids, w))[1])
    got = emb(t)
    assert max(seen) == 2  # one [B,S] column at a time
    W = emb.weight.data
    assert torch.allclose(got[0, 3], W[t[0, 3]].sum(0), atol=1e-5)
    assert torch.equal(got[0, 0], W[t[0, 0, 0]])
