import pytest
import torch

from engine.model.sampling import sample_top_k


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_greedy_is_argmax():
    logits = torch.randn(3, 50, generator=_gen(1))
    want = logits.argmax(-1)
    assert torch.equal(sample_top_k(logits, 10, 0.0, _gen()), want)
    assert torch.equal(sample_top_k(logits, 1, 1.0, _gen()), want)


def test_samples_stay_in_top_k():
    logits = torch.randn(4, 100, generator=_gen(2))
    topk = logits.topk(5, dim=-1).indices
    for seed in range(30):
        got = sample_top_k(logits, 5, 1.3, _gen(seed))
        assert (topk == got.unsqueeze(-1)).any(-1).all()


def test_seeded_determinism_and_seed_matters():
    logits = torch.zeros(64, 1000)
    a = sample_top_k(logits, 1000, 1.0, _gen(7))
    b = sample_top_k(logits, 1000, 1.0, _gen(7))
    c = sample_top_k(logits, 1000, 1.0, _gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_distribution_matches_tempered_softmax_of_top_k():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    k, t, n = 3, 0.7, 40000
    draws = sample_top_k(logits.expand(n, 6), k, t, _gen(3))
    freq = torch.bincount(draws, minlength=6).float() / n
    ref = torch.zeros(6)
    ref[:k] = torch.softmax(logits[:k] / t, -1)  # independent reference: first k are the top k here
    assert torch.allclose(freq, ref, atol=0.01)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        sample_top_k(torch.zeros(5), 0, 1.0, _gen())
