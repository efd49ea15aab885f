"""engine.model.linear: the few-row CPU product equals F.linear, and the layer is nn.Linear to a checkpoint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.model import linear as linear_mod
from engine.model.linear import FEW_ROWS, Linear, linear


@pytest.mark.parametrize("shape", [(1, 1, 48), (2, 1, 48), (3, 2, 48), (FEW_ROWS, 48), (FEW_ROWS + 1, 48), (0, 48)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_f_linear(shape: tuple[int, ...], with_bias: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    w = torch.randn(40, 48, generator=g)
    b = torch.randn(40, generator=g) if with_bias else None
    got = linear(x, w, b)
    assert got.shape == (*shape[:-1], 40)
    torch.testing.assert_close(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5)


def test_few_rows_take_the_transposed_product(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = F.linear
    monkeypatch.setattr(linear_mod.F, "linear", lambda x, w, b=None: calls.append(x.shape[0]) or real(x, w, b))
    w = torch.randn(8, 4)
    linear(torch.randn(2, 4), w)  # a 2-row decode step: not F.linear
    assert calls == []
    linear(torch.randn(1, 4), w)
    linear(torch.randn(FEW_ROWS + 1, 4), w)
    assert calls == [1, FEW_ROWS + 1]


def test_layer_loads_and_saves_as_nn_linear() -> None:
    ref = nn.Linear(6, 5)
    ours = Linear(6, 5)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    x = torch.randn(3, 6)
    torch.testing.assert_close(ours(x), ref(x))
