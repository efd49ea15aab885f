"""The port-style baseline (benchmarks/port_baseline.py) computes the same numbers as the engine:
same greedy backbone tokens, same hidden states, same super-res codes — only the strategy differs."""

from __future__ import annotations

import pytest
import torch

from benchmarks.models import random_transformer, transformer_config
from benchmarks.port_baseline import embed_materialised, port_generate, port_hidden, port_superres_pass
from benchmarks.superres_pass import superres_tokens
from engine.stages.backbone import generate_audio_tokens
from engine.events import CancelToken
from engine.model.sampling import sample_top_k

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _model(kind: str):
    return random_transformer(transformer_config(kind, hidden=64, layers=2, heads=4, groups=2, head_dim=16),
                              "cpu", torch.float32)


@pytest.fixture(scope="module")
def backbone():
    return _model("backbone")


@pytest.fixture(scope="module")
def superres():
    return _model("superres")


@pytest.mark.parametrize("temperature,top_k", [(0.0, 1), (1.0, 80)])  # greedy; sampled with one seed
def test_backbone_tokens_and_hidden_match_the_engine(backbone, temperature: float, top_k: int) -> None:
    prompt = list(range(1000, 1030))
    with torch.inference_mode():
        ours = generate_audio_tokens(backbone, prompt, max_new_tokens=40, temperature=temperature, top_k=top_k,
                                     generator=torch.Generator().manual_seed(3), cancel=CancelToken())
        port = port_generate(backbone, prompt, max_new_tokens=40, temperature=temperature, top_k=top_k,
                             generator=torch.Generator().manual_seed(3))
        assert not ours.hit_eos and len(port) == 40
        assert [q for pair in ours.coarse.tolist() for q in pair] == [t - 128256 - 1024 * (i % 2)
                                                                      for i, t in enumerate(port)]
        seq = torch.tensor([prompt + port])
        ref = backbone.hidden(seq, 0)
        assert torch.allclose(port_hidden(backbone, seq, 0), ref, atol=1e-4, rtol=1e-4)


def test_materialised_embedding_equals_column_sum(superres) -> None:
    tokens = superres_tokens(96, 16, 7, "cpu")[:, :, :7]
    with torch.inference_mode():
        assert torch.allclose(embed_materialised(superres, tokens), superres.embed(tokens), atol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_superres_pass_matches_the_engine(superres, padded: bool) -> None:
    S, T, idx = 300, 16, 5
    tokens = superres_tokens(S, T, idx, "cpu")
    mask = None
    if padded:  # the port's padded sequence: pad rows at the end, masked as keys
        tokens = torch.cat([tokens, torch.full((1, 40, 64), -1, dtype=torch.long)], dim=1)
        mask = (torch.arange(S + 40) >= S).unsqueeze(0)
    with torch.inference_mode():
        ref = superres.hidden(tokens[:, :, :idx], 0, causal=False, key_padding_mask=mask, block_size=128)
        got = port_hidden(superres, tokens[:, :, :idx], 0, causal=False, key_padding_mask=mask, block=128)
        assert torch.allclose(got[:, :S], ref[:, :S], atol=1e-4, rtol=1e-4)
        base = 128256 + 1024 * idx
        ours = sample_top_k(superres.logits_slice(ref[:, T:S], base, base + 1024), 1, 1.0, torch.Generator()) + base
        port = port_superres_pass(superres, tokens, idx, T, top_k=1, generator=torch.Generator(), block=128,
                                  key_padding_mask=mask)
        assert torch.equal(port[:, T:S], ours)
