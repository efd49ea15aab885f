"""Batched variations in the backbone (issue 12): B rows decode as one batch with one static cache;
row i follows its own seed exactly as a lone run would, and stops at its own EOS."""

from __future__ import annotations

import pytest
import torch

import engine.stages.backbone as bb
from engine.events import BACKBONE, CancelToken, Progress, drain
from engine.model.transformer import Transformer
from engine.testing.tiny_transformer import tiny_config, tiny_state_dict

PROMPT = [128000, 5, 6, 7, 128010, 128009, 128010]
SEEDS = [11, 12, 13]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def model() -> Transformer:
    cfg = tiny_config("backbone")
    m = Transformer(cfg).eval()
    m.load_state_dict({k: v.float() for k, v in tiny_state_dict(cfg, seed=4).items()})
    return m


def run(model: Transformer, seeds: list[int], monkeypatch: pytest.MonkeyPatch | None = None,
        max_new: int = 24, **kw) -> tuple[list[bb.BackboneResult], list[torch.Tensor]]:
    """Results per row, and the [rows,1025] logits of every step (recorded from the sampler)."""
    seen: list[torch.Tensor] = []
    if monkeypatch is not None:
        real = bb.BackboneRun._sample

        def spy(self, logits):
            seen.append(logits.clone())
            return real(self, logits)
        monkeypatch.setattr(bb.BackboneRun, "_sample", spy)
    run_ = bb.BackboneRun(model, PROMPT, generators=[torch.Generator().manual_seed(s) for s in seeds],
                          max_new_tokens=max_new, temperature=kw.get("temperature", 1.0), top_k=kw.get("top_k", 50))
    with torch.inference_mode():
        return drain(run_.steps(CancelToken())), seen


def test_each_row_is_its_lone_run(model: Transformer, monkeypatch: pytest.MonkeyPatch) -> None:
    batch, batch_logits = run(model, SEEDS, monkeypatch)
    for i, seed in enumerate(SEEDS):
        monkeypatch.undo()
        lone, lone_logits = run(model, [seed], monkeypatch)
        assert torch.equal(batch[i].coarse, lone[0].coarse), f"row {i}"  # CPU float32: the same codes
        assert batch[i].generated == lone[0].generated and batch[i].hit_eos == lone[0].hit_eos
        for step, (b, one) in enumerate(zip(batch_logits, lone_logits)):
            torch.testing.assert_close(b[i], one[0], rtol=1e-5, atol=1e-5, msg=f"row {i}, step {step}")
    assert len({tuple(r.coarse.flatten().tolist()) for r in batch}) == len(SEEDS)  # the seeds differ


def test_rows_stop_at_their_own_eos_and_the_batch_ends_with_the_last(model: Transformer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 0 samples EOS at step 3, row 1 at step 10: row 0 keeps 3 tokens, row 1 keeps 10, and the
    run stops at the first EOS check (every 8 tokens) after both have ended."""
    steps = {"n": 0}
    eos_step = [3, 10]

    def scripted(self, logits):
        n = steps["n"]
        steps["n"] += 1
        pick = torch.ones(self.rows, dtype=torch.long)  # slot index 1: code 0 of q0 or q1
        for row, at in enumerate(eos_step):
            if n == at:
                pick[row] = 0  # slot index 0 is EOS
        return pick

    monkeypatch.setattr(bb.BackboneRun, "_sample", scripted)
    results, _ = run(model, [1, 2], max_new=64)
    assert [r.hit_eos for r in results] == [True, True]
    assert [r.generated for r in results] == [4, 11]  # EOS counted, tokens after it are not kept
    assert [r.coarse.shape[0] for r in results] == [1, 5]  # 3 tokens → 1 pair (a stray q0), 10 → 5 pairs
    assert [r.dropped for r in results] == [1, 0]
    assert steps["n"] == 16  # the check after token 16 saw row 1's EOS: no token sampled beyond it


def test_progress_counts_new_tokens_of_the_batch(model: Transformer) -> None:
    run_ = bb.BackboneRun(model, PROMPT, generators=[torch.Generator().manual_seed(s) for s in SEEDS],
                          max_new_tokens=16, temperature=1.0, top_k=50, progress_total=100)
    events: list = []
    with torch.inference_mode():
        drain(run_.steps(CancelToken()), events.append)
    assert [e.done for e in events if isinstance(e, Progress)] == [8, 16]
    assert all(e.stage == BACKBONE and e.total == 100 for e in events)


def test_one_prefill_serves_every_row(model: Transformer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The prompt is run through the model once (one row), not once per variation."""
    calls: list[tuple[int, int]] = []
    real = Transformer.hidden

    def counting(self, tokens, positions=0, **kw):
        calls.append(tuple(tokens.shape[:2]))
        return real(self, tokens, positions, **kw)
    monkeypatch.setattr(Transformer, "hidden", counting)
    run(model, SEEDS, max_new=4)
    assert calls[0] == (1, len(PROMPT)) and all(c == (len(SEEDS), 1) for c in calls[1:])


def test_the_pipeline_batches_variations_and_times_the_shared_stage(tiny_weights) -> None:
    from engine.events import Song, Stage
    from engine.pipeline import Pipeline
    from engine.request import SongRequest

    events = list(Pipeline(tiny_weights, device="cpu").generate(
        SongRequest(tags="Pop", instrumental=True, minutes=1, seed=40, variations=2, max_tokens=16)))
    stages = [(e.name, e.variation) for e in events if isinstance(e, Stage)]
    assert stages.count((BACKBONE, None)) == 1  # one backbone stage for both variations
    songs = [e for e in events if isinstance(e, Song)]
    assert [s.metadata["seed"] for s in songs] == [40, 41]
    assert songs[0].metadata["timings_s"][BACKBONE] == songs[1].metadata["timings_s"][BACKBONE] > 0
    lone = [e for e in Pipeline(tiny_weights, device="cpu").generate(
        SongRequest(tags="Pop", instrumental=True, minutes=1, seed=41, max_tokens=16)) if isinstance(e, Song)]
    assert (songs[1].codes == lone[0].codes).all()  # variation 2 = the lone song of its seed
