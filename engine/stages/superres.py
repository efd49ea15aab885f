"""Super-resolution (SPEC §7, §12): expand (q0, q1) per frame to q0..q63 in 62 non-causal passes.

Rows 0..T-1 hold the super-res prompt (column 0, others pad -1), rows T..S-1 the frames.
Pass idx = 2..63 writes the task marker 128255-idx into column 0 of the BOA row T-1, runs
the model bidirectionally on columns 0..idx-1, and samples column idx of the audio rows
from the top-k of the 1024 lm_head rows of codebook idx (float32 logits, no temperature).
The sequence is sized to the real S (upstream pads to 8192; ``pad_to`` reproduces that,
with pad keys masked, for tests).

Continuing a song: the first F frames' codes (all 64 codebooks) are given and kept in every
pass; only frames F.. are sampled, while every pass attends to the whole sequence.
"""

from __future__ import annotations

from typing import Callable, Generator

import torch
from torch import Tensor

from engine.errors import ConfigError, NonFiniteError
from engine.events import SUPERRES, CancelToken, Progress, drain
from engine.model.sampling import sample_top_k
from engine.model.transformer import Transformer
from engine.prompt.special_tokens import AUDIO_BASE
from engine.prompt.special_tokens import CODEBOOK_SIZE as CODEBOOK

NUM_Q = 64
TASK_MARKER_BASE = 128255  # pass idx uses 128255 - idx
PASSES = NUM_Q - 2


def superres_passes(model: Transformer, text_ids: list[int], coarse: Tensor, *, top_k: int,
                    generator: torch.Generator, cancel: CancelToken, fixed: Tensor | None = None,
                    block_size: int = 1024, pad_to: int | None = None) -> Generator[Progress, None, Tensor]:
    """The stage: coarse [A,2] codes 0..1023 → codes [64, A] (long, on the model's device), yielding
    Progress after each of the 62 passes. ``fixed`` [64, F] (F ≤ A): codes of the first F frames,
    kept as they are (their columns 0 and 1 must equal ``coarse[:F]``)."""
    cfg = model.cfg
    if cfg.vocab_size < AUDIO_BASE + NUM_Q * CODEBOOK:
        raise ConfigError(f"Super-res vocab_size={cfg.vocab_size} has no room for {NUM_Q} codebooks "
                          f"(needs {AUDIO_BASE + NUM_Q * CODEBOOK}).")
    if not text_ids:
        raise ValueError("the super-res prompt is empty (it must end with the BOA token)")
    if coarse.dim() != 2 or coarse.shape[1] != 2:
        raise ValueError(f"coarse must be [A,2], got {tuple(coarse.shape)}")
    dev = model.lm_head.weight.device
    T, A = len(text_ids), coarse.shape[0]
    S = T + A
    N = S if pad_to is None else pad_to
    if N < S:
        raise ValueError(f"pad_to={pad_to} is shorter than the sequence ({S})")
    coarse = coarse.to(device=dev, dtype=torch.long)
    if A and bool(((coarse < 0) | (coarse >= CODEBOOK)).any()):
        raise ValueError("coarse codes must be in 0..1023")
    offsets = AUDIO_BASE + CODEBOOK * torch.arange(NUM_Q, device=dev)  # [64]

    tokens = torch.full((1, N, NUM_Q), -1, dtype=torch.long, device=dev)
    tokens[0, :T, 0] = torch.tensor(text_ids, dtype=torch.long, device=dev)
    tokens[0, T:S, :2] = coarse + offsets[:2]
    F = 0
    if fixed is not None:
        F = fixed.shape[1]
        if fixed.dim() != 2 or fixed.shape[0] != NUM_Q or F > A:
            raise ValueError(f"fixed must be [64, F] with F ≤ {A}, got {tuple(fixed.shape)}")
        fixed = fixed.to(device=dev, dtype=torch.long)
        if not torch.equal(fixed[:2].T, coarse[:F]):
            raise ValueError("fixed codes 0 and 1 differ from the coarse prefix")
        tokens[0, T:T + F] = fixed.T + offsets  # read by pass idx through columns 0..idx-1 only
    mask = None if N == S else (torch.arange(N, device=dev) >= S).unsqueeze(0)  # [1,N], True = pad

    for idx in range(2, NUM_Q):
        cancel.check()
        if A > F:
            tokens[0, T - 1, 0] = TASK_MARKER_BASE - idx
            h = model.hidden(tokens[:, :, :idx], 0, causal=False, key_padding_mask=mask, block_size=block_size)
            base = AUDIO_BASE + CODEBOOK * idx
            logits = model.logits_slice(h[:, T + F:S], base, base + CODEBOOK)  # [1,A-F,1024] float32
            if not bool(torch.isfinite(logits).all()):
                raise NonFiniteError("super-res", f"pass {idx - 1} of {PASSES}",
                                     str(h.dtype).removeprefix("torch."))
            tokens[0, T + F:S, idx] = sample_top_k(logits, top_k, 1.0, generator)[0] + base
        yield Progress(SUPERRES, idx - 1, PASSES)
    return (tokens[0, T:S] - offsets).T.contiguous()  # [64,A]


def expand_codes(model: Transformer, text_ids: list[int], coarse: Tensor, *, top_k: int,
                 generator: torch.Generator, cancel: CancelToken,
                 on_pass: Callable[[int, int], None] | None = None, fixed: Tensor | None = None,
                 block_size: int = 1024, pad_to: int | None = None) -> Tensor:
    """``superres_passes`` run to its end (tests, benchmarks, tools); ``on_pass(done, 62)``."""
    stage = superres_passes(model, text_ids, coarse, top_k=top_k, generator=generator, cancel=cancel,
                            fixed=fixed, block_size=block_size, pad_to=pad_to)
    return drain(stage, None if on_pass is None else (lambda ev: on_pass(ev.done, ev.total)))
