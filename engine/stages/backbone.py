"""Backbone sampling (SPEC §6): prefill the prompt, then decode one token per step with a
static KV cache, until EOS or ``max_new_tokens``.

Slots: generated token t is q0 when t is even and q1 when odd. Sampling at each step is
restricted to that slot's 1024 codes plus EOS (the logits of just those 1025 lm_head
rows, all inside the real vocab), so an out-of-slot token cannot be sampled. Top-k and
temperature act on those 1025 logits; where the model behaves this equals upstream's
unconstrained sampling. The stream is still validated when pairing (``pair_audio_tokens``).

Tokens stay on the device in a preallocated buffer; the host reads them only every
``eos_check_every`` steps to look for EOS (tokens sampled after EOS are discarded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.errors import ConfigError
from engine.model.transformer import Transformer
from engine.events import CancelToken
from engine.model.sampling import sample_top_k
from engine.prompt.special_tokens import AUDIO_BASE, EOS
from engine.prompt.special_tokens import CODEBOOK_SIZE as CODEBOOK

Q0 = AUDIO_BASE  # q0 ids: Q0..Q0+1023
Q1 = AUDIO_BASE + CODEBOOK  # q1 ids: Q1..Q1+1023


@dataclass
class BackboneResult:
    coarse: Tensor  # [A,2] long, (q0, q1) codes 0..1023 per frame, on the model's device
    generated: int  # tokens sampled and kept, EOS included
    hit_eos: bool
    dropped: int  # stray (odd final) or out-of-slot tokens left out of ``coarse``
    prompt_tokens: int


def pair_audio_tokens(tokens: list[int]) -> tuple[list[tuple[int, int]], int]:
    """Interleaved ids q0,q1,q0,q1… → (q0, q1) code pairs and the number of tokens dropped.

    A token outside its slot's range is dropped (a q0 arriving where a q1 is due replaces
    the unpaired q0), so one bad token never shifts every later pair; a final unpaired q0 is
    dropped too.
    """
    pairs: list[tuple[int, int]] = []
    dropped = 0
    q0: int | None = None
    for tok in tokens:
        if Q0 <= tok < Q0 + CODEBOOK:
            dropped += q0 is not None
            q0 = tok - Q0
        elif Q1 <= tok < Q1 + CODEBOOK and q0 is not None:
            pairs.append((q0, tok - Q1))
            q0 = None
        else:
            dropped += 1
    return pairs, dropped + (q0 is not None)


def generate_audio_tokens(model: Transformer, prompt_ids: list[int], *, max_new_tokens: int, temperature: float,
                          top_k: int, generator: torch.Generator, cancel: CancelToken,
                          on_token: Callable[[int, int], None] | None = None,
                          eos_check_every: int = 8) -> BackboneResult:
    cfg = model.cfg
    if cfg.vocab_size < Q1 + CODEBOOK:
        raise ConfigError(f"Backbone vocab_size={cfg.vocab_size} has no room for the audio tokens "
                          f"(needs {Q1 + CODEBOOK}).")
    if not prompt_ids:
        raise ValueError("empty prompt")
    if max_new_tokens < 1 or eos_check_every < 1:
        raise ValueError(f"max_new_tokens and eos_check_every must be >= 1, got {max_new_tokens}, {eos_check_every}")
    W = model.lm_head.weight
    dev = W.device
    P = len(prompt_ids)
    # per slot: candidate ids [EOS, lo..lo+1023] and their lm_head rows [1025,H]
    ids = [torch.cat([torch.tensor([EOS], device=dev), torch.arange(lo, lo + CODEBOOK, device=dev)])
           for lo in (Q0, Q1)]
    rows = [W[i] for i in ids]
    out = torch.empty(max_new_tokens, dtype=torch.long, device=dev)
    cache = model.new_cache(1, P + max_new_tokens)

    cancel.check()
    h = model.hidden(torch.tensor([prompt_ids], device=dev), 0, cache=cache)[:, -1]  # [1,H]
    n = checked = 0
    eos_at: int | None = None
    while n < max_new_tokens:
        cancel.check()
        if n > 0:
            h = model.hidden(out[n - 1:n].view(1, 1), P + n - 1, cache=cache)[:, -1]
        slot = n % 2
        logits = F.linear(h, rows[slot]).float()  # [1,1025]
        out[n:n + 1] = ids[slot][sample_top_k(logits, top_k, temperature, generator)]
        n += 1
        if n % eos_check_every == 0 or n == max_new_tokens:
            if on_token is not None:
                on_token(n, max_new_tokens)
            hits = (out[checked:n] == EOS).nonzero()
            if hits.numel():  # one host sync per eos_check_every tokens
                eos_at = checked + int(hits[0, 0])
                break
            checked = n
    kept = out[:eos_at if eos_at is not None else n].tolist()
    pairs, dropped = pair_audio_tokens(kept)
    coarse = torch.tensor(pairs, dtype=torch.long, device=dev).view(-1, 2)
    generated = eos_at + 1 if eos_at is not None else n
    if on_token is not None and generated != n:
        on_token(generated, max_new_tokens)
    return BackboneResult(coarse=coarse, generated=generated, hit_eos=eos_at is not None, dropped=dropped,
                          prompt_tokens=P)
