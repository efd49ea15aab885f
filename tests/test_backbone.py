import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.stages.backbone import CODEBOOK, EOS, Q0, Q1, generate_audio_tokens, pair_audio_tokens
from engine.errors import Cancelled
from engine.model.transformer import Transformer
from engine.events import CancelToken
from engine.testing.tiny_transformer import tiny_config, tiny_state_dict

PROMPT = [128000, 5, 6, 7, 128010, 128009, 128010]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def model():
    cfg = tiny_config("backbone")
    m = Transformer(cfg).eval()
    m.load_state_dict({k: v.float() for k, v in tiny_state_dict(cfg, seed=4).items()})
    return m


class Scripted(Transformer):
    """A real model whose final hidden for decode step j is the one-hot e_j, so
    lm_head.weight[:, j] is exactly the logit vector of step j."""

    def __init__(self, steps_logits: torch.Tensor, prompt_len: int) -> None:
        cfg = tiny_config("backbone")
        super().__init__(cfg)
        self.eval()
        self.P = prompt_len
        self.calls = 0
        with torch.no_grad():
            self.lm_head.weight.zero_()
            self.lm_head.weight[:, : steps_logits.shape[0]] = steps_logits.T

    def hidden(self, tokens, positions=0, **kw):
        self.calls += 1
        real = super().hidden(tokens, positions, **kw)  # keeps the cache honest
        step = positions + tokens.shape[1] - 1 - self.P + 1
        h = torch.zeros_like(real)
        h[..., step] = 1.0
        return h


def run(m, **kw):
    args = dict(max_new_tokens=20, temperature=0.0, top_k=50, generator=torch.Generator().manual_seed(0),
                cancel=CancelToken())
    args.update(kw)
    with torch.inference_mode():
        return generate_audio_tokens(m, PROMPT, **args)


def test_greedy_equals_full_recomputation_reference(model):
    res = run(model, max_new_tokens=10)
    # reference: no cache, full forward each step, mask to slot + EOS by hand, argmax
    seq = list(PROMPT)
    want = []
    for t in range(10):
        with torch.no_grad():
            logits = model(torch.tensor([seq]))[0, -1]
        allowed = torch.full_like(logits, float("-inf"))
        lo = Q0 if t % 2 == 0 else Q1
        allowed[lo:lo + CODEBOOK] = 0
        allowed[EOS] = 0
        tok = int((logits + allowed).argmax())
        if tok == EOS:
            break
        want.append(tok)
        seq.append(tok)
    pairs, _ = pair_audio_tokens(want)
    assert res.coarse.tolist() == [list(p) for p in pairs]
    assert res.prompt_tokens == len(PROMPT)


def test_seeded_sampling_is_reproducible(model):
    a = run(model, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(3), max_new_tokens=16)
    b = run(model, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(3), max_new_tokens=16)
    c = run(model, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(4), max_new_tokens=16)
    assert torch.equal(a.coarse, b.coarse) and not torch.equal(a.coarse, c.coarse)
    assert a.coarse.dtype == torch.long and ((a.coarse >= 0) & (a.coarse < CODEBOOK)).all()


def test_out_of_slot_tokens_cannot_be_sampled():
    V = tiny_config("backbone").padded_vocab_size
    L = torch.zeros(12, V)
    L[:, 5] = 50.0  # a text token the model "wants"
    L[:, 130400] = 60.0  # a padding row beyond the real vocab
    L[:, Q1 + 7] = 40.0  # a q1 token: preferred in q0 slots too
    L[:, Q0 + 9] = 30.0  # a q0 token: preferred in q1 slots too
    m = Scripted(L, len(PROMPT))
    res = run(m, max_new_tokens=12)
    assert res.coarse.tolist() == [[9, 7]] * 6 and res.dropped == 0 and not res.hit_eos
    res = run(m, max_new_tokens=12, temperature=1.4, top_k=200)
    assert ((res.coarse >= 0) & (res.coarse < CODEBOOK)).all() and res.coarse.shape == (6, 2) and res.dropped == 0


def test_eos_stops_is_not_audio_and_odd_count_drops_stray():
    V = tiny_config("backbone").padded_vocab_size
    L = torch.zeros(20, V)
    for j in range(20):
        L[j, (Q0 if j % 2 == 0 else Q1) + j] = 5.0
    L[5, EOS] = 9.0  # EOS at step 5: 5 audio tokens before it (odd)
    m = Scripted(L, len(PROMPT))
    seen = []
    res = run(m, max_new_tokens=20, eos_check_every=8, on_token=lambda d, t: seen.append((d, t)))
    assert res.hit_eos and res.generated == 6
    assert res.coarse.tolist() == [[0, 1], [2, 3]]  # the stray q0 (step 4) is dropped, EOS is not audio
    assert res.dropped == 1
    assert seen[0] == (8, 20) and seen[-1] == (6, 20)
    # no EOS: an odd cap also drops the stray final token
    L[5, EOS] = 0.0
    res = run(Scripted(L, len(PROMPT)), max_new_tokens=7)
    assert not res.hit_eos and res.generated == 7 and res.coarse.shape == (3, 2) and res.dropped == 1


def test_token_layout_and_eos_are_the_spec_literals():
    # written with literal ids, not the module's constants: EOS 128001, q0 = 128256 + c, q1 = 128256 + 1024 + c
    V = tiny_config("backbone").padded_vocab_size
    L = torch.zeros(8, V)
    for j in range(8):
        L[j, (128256 if j % 2 == 0 else 128256 + 1024) + 10 * j + 1] = 5.0
    L[5, 128001] = 9.0
    L[2, 128009] = 20.0  # EOT: a text token, never sampled, never a stop
    res = run(Scripted(L, len(PROMPT)), max_new_tokens=8, eos_check_every=1)
    assert res.hit_eos and res.generated == 6
    assert res.coarse.tolist() == [[1, 11], [21, 31]] and res.dropped == 1  # step 4 (q0 41) is the stray


def test_pair_audio_tokens_defensive():
    q0 = lambda c: Q0 + c
    q1 = lambda c: Q1 + c
    assert pair_audio_tokens([q0(1), q1(2), q0(3), q1(4)]) == ([(1, 2), (3, 4)], 0)
    assert pair_audio_tokens([q0(1), q1(2), q0(3)]) == ([(1, 2)], 1)
    assert pair_audio_tokens([q1(9), q0(1), 42, q1(2)]) == ([(1, 2)], 2)
    assert pair_audio_tokens([q0(1), q0(5), q1(2), EOS, 200000]) == ([(5, 2)], 3)
    assert pair_audio_tokens([]) == ([], 0)


class CountingCancel(CancelToken):
    def __init__(self, model, at: int) -> None:
        super().__init__()
        self.model, self.at, self.n, self.calls_at_cancel = model, at, 0, None

    def check(self) -> None:
        self.n += 1
        if self.n == self.at:
            self.cancel()
            self.calls_at_cancel = self.model.calls
        super().check()


def test_cancel_stops_within_one_step():
    V = tiny_config("backbone").padded_vocab_size
    m = Scripted(torch.zeros(20, V), len(PROMPT))
    token = CountingCancel(m, at=6)
    with pytest.raises(Cancelled):
        run(m, cancel=token, max_new_tokens=20, temperature=1.0, eos_check_every=100)
    assert token.calls_at_cancel == m.calls  # no forward after the cancel
    assert m.calls == 4  # checks: before prefill, then one per step; step 0 reuses the prefill


class SyncCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default):
            self.syncs += 1
        return func(*args, **(kwargs or {}))


def test_host_syncs_only_every_eos_check(model):
    with SyncCounter() as sc:
        res = run(model, max_new_tokens=16, temperature=1.0, eos_check_every=4,
                  generator=torch.Generator().manual_seed(1))
    assert not res.hit_eos
    assert sc.syncs <= 16 // 4 + 2  # one check per 4 tokens, plus the final read
