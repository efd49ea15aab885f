import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import engine.stages.superres as sr
from engine.stages.backbone import generate_audio_tokens
from engine.errors import Cancelled
from engine.model.loader import load_transformer
from engine.model.transformer import Transformer
from engine.events import CancelToken
from engine.stages.superres import expand_codes
from engine.testing.tiny_transformer import tiny_config, tiny_state_dict, write_tiny_transformer

TEXT = [128000, 40, 41, 128008, 128010, 128009, 128010]  # ends with the BOA row
A = 9


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def model():
    cfg = tiny_config("superres")
    m = Transformer(cfg).eval()
    m.load_state_dict({k: v.float() for k, v in tiny_state_dict(cfg, seed=5).items()})
    return m


@pytest.fixture(scope="module")
def coarse():
    return torch.randint(0, 1024, (A, 2), generator=torch.Generator().manual_seed(9))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def expand(m, coarse, **kw):
    args = dict(top_k=10, generator=gen(), cancel=CancelToken())
    args.update(kw)
    with torch.inference_mode():
        return expand_codes(m, TEXT, coarse, **args)


def test_greedy_matches_hand_built_reference(model, coarse):
    got = expand(model, coarse, top_k=1, block_size=4)
    # the spec's procedure written out: [S,2] rows, BOA marker 128255-idx, bidirectional, rows 128256+1024·idx
    T, S = len(TEXT), len(TEXT) + A
    cols = [[t for t in TEXT] + [128256 + int(c) for c in coarse[:, 0]],
            [-1] * T + [128256 + 1024 + int(c) for c in coarse[:, 1]]]
    W = model.lm_head.weight
    for idx in range(2, 64):
        cols[0][T - 1] = 128255 - idx
        x = torch.tensor(cols).T.unsqueeze(0)  # [1,S,idx]
        with torch.no_grad():
            h = model.hidden(x, torch.arange(S), causal=False)[0]
        logits = (h @ W[128256 + 1024 * idx: 128256 + 1024 * (idx + 1)].T).float()
        new = logits.argmax(-1)
        cols.append([-1] * T + [128256 + 1024 * idx + int(c) for c in new[T:]])
    want = torch.tensor([[c - 128256 - 1024 * k for c in col[T:]] for k, col in enumerate(cols)])
    assert got.shape == (64, A) and got.dtype == torch.long
    assert torch.equal(got, want)


def test_real_length_equals_padded_on_real_positions(model, coarse):
    a = expand(model, coarse, generator=gen(11))
    b = expand(model, coarse, generator=gen(11), pad_to=len(TEXT) + A + 13, block_size=5)
    assert torch.equal(a, b)
    # and the hidden states directly, for one pass's input
    S = len(TEXT) + A
    x = torch.full((1, S + 13, 5), -1)
    x[0, :S] = torch.randint(128256, 130000, (S, 5), generator=gen(1))
    x[0, : len(TEXT), 1:] = -1
    mask = (torch.arange(S + 13) >= S).unsqueeze(0)
    with torch.no_grad():
        h_real = model.hidden(x[:, :S], 0, causal=False)
        h_pad = model.hidden(x, 0, causal=False, key_padding_mask=mask, block_size=7)
        h_nomask = model.hidden(x, 0, causal=False)
    assert torch.allclose(h_real, h_pad[:, :S], atol=1e-5)
    assert not torch.allclose(h_real, h_nomask[:, :S], atol=1e-3)  # the mask is what makes them equal


def test_keeps_q0_q1_and_codes_in_range(model, coarse):
    got = expand(model, coarse, generator=gen(2))
    assert torch.equal(got[:2].T, coarse)
    assert ((got >= 0) & (got < 1024)).all()
    assert torch.equal(got, expand(model, coarse, generator=gen(2)))
    assert not torch.equal(got, expand(model, coarse, generator=gen(3)))


def test_top_k_without_temperature(model, coarse, monkeypatch):
    seen = []
    orig = sr.sample_top_k
    monkeypatch.setattr(sr, "sample_top_k", lambda l, k, t, g: (seen.append((l.dtype, l.shape, k, t)), orig(l, k, t, g))[1])
    expand(model, coarse, top_k=10)
    assert len(seen) == 62 and all(s == (torch.float32, (1, A, 1024), 10, 1.0) for s in seen)


def test_passes_are_bidirectional_with_task_marker(model, coarse, monkeypatch):
    calls = []
    orig = model.hidden

    def spy(tokens, positions=0, **kw):
        calls.append((tokens[0, len(TEXT) - 1, 0].item(), tokens.shape[-1], kw.get("causal")))
        return orig(tokens, positions, **kw)
    monkeypatch.setattr(model, "hidden", spy)
    progress = []
    expand(model, coarse, on_pass=lambda d, t: progress.append((d, t)))
    assert calls == [(128255 - i, i, False) for i in range(2, 64)]
    assert progress == [(i, 62) for i in range(1, 63)]


def test_cancel_checked_every_pass(model, coarse, monkeypatch):
    n = {"hidden": 0}
    orig = model.hidden
    monkeypatch.setattr(model, "hidden", lambda *a, **k: (n.__setitem__("hidden", n["hidden"] + 1), orig(*a, **k))[1])
    token = CancelToken()
    with pytest.raises(Cancelled):
        expand(model, coarse, cancel=token, on_pass=lambda d, t: token.cancel() if d == 3 else None)
    assert n["hidden"] == 3


class DtypeRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.dtypes: dict[torch.dtype, str] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                self.dtypes.setdefault(t.dtype, str(func))
        return out


def test_tiny_backbone_and_superres_create_no_float64(tmp_path):
    write_tiny_transformer(tmp_path, "backbone", seed=0)
    write_tiny_transformer(tmp_path, "superres", seed=1)
    rec = DtypeRecorder()
    with rec, torch.inference_mode():
        bb = load_transformer(tmp_path / "khala_backbone.safetensors", tmp_path / "backbone_megatron_args.json",
                              "cpu", torch.float32)
        res = generate_audio_tokens(bb, TEXT, max_new_tokens=8, temperature=1.0, top_k=50, generator=gen(),
                                    cancel=CancelToken(), eos_check_every=4)
        sup = load_transformer(tmp_path / "khala_superres.safetensors", tmp_path / "superres_megatron_args.json",
                               "cpu", torch.float32)
        codes = expand_codes(sup, TEXT, res.coarse, top_k=10, generator=gen(), cancel=CancelToken())
    assert codes.shape[0] == 64 and codes.shape[1] == res.coarse.shape[0] > 0
    assert torch.float64 not in rec.dtypes, rec.dtypes[torch.float64]
    assert torch.float32 in rec.dtypes and torch.int64 in rec.dtypes
    with rec:  # the recorder does see a float64 op
        torch.ones(1, dtype=torch.float64)
    assert torch.float64 in rec.dtypes


def test_rejects_bad_input(model):
    with pytest.raises(ValueError):
        expand(model, torch.tensor([[0, 1024]]))
    with pytest.raises(ValueError):
        expand(model, torch.zeros(3, 2, dtype=torch.long), pad_to=5)
    assert expand(model, torch.zeros(0, 2, dtype=torch.long)).shape == (64, 0)
