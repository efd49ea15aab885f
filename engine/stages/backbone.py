"""Backbone sampling (SPEC §6, §12): prefill the prompt (and a song's own coarse tokens when
continuing it), then decode one token per step for B variations at once with a static KV cache,
until every row has sampled EOS or ``max_new_tokens``.

Rows: variation i samples with its own ``torch.Generator`` (its own seed) and stops at its own
EOS; rows share one prefill (computed once, copied into every row of the cache) and each decode
step is one batched forward, so B variations read the weights once per token.

Slots: generated token t is q0 when t is even and q1 when odd. Sampling at each step is
restricted to that slot's 1024 codes plus EOS (the logits of just those 1025 lm_head rows, all
inside the real vocab), so an out-of-slot token cannot be sampled. Top-k and temperature act on
those 1025 logits; where the model behaves this equals upstream's unconstrained sampling.

Tokens stay on the device in a preallocated buffer; the host reads them only every
``eos_check_every`` steps, to look for EOS in every row and for non-finite logits (one small
transfer), and then yields a Progress event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator

import torch
from torch import Tensor

from engine.errors import ConfigError, NonFiniteError
from engine.events import BACKBONE, CancelToken, Progress, drain
from engine.model.linear import linear
from engine.model.sampling import sample_top_k_rows
from engine.model.transformer import Transformer
from engine.prompt.special_tokens import AUDIO_BASE, EOS
from engine.prompt.special_tokens import CODEBOOK_SIZE as CODEBOOK

Q0 = AUDIO_BASE  # q0 ids: Q0..Q0+1023
Q1 = AUDIO_BASE + CODEBOOK  # q1 ids: Q1..Q1+1023


@dataclass
class BackboneResult:
    coarse: Tensor  # [A,2] long, (q0, q1) codes 0..1023 per frame (prefix frames first), on the model's device
    generated: int  # new tokens sampled and kept, EOS included (prefix tokens not counted)
    hit_eos: bool
    dropped: int  # stray (odd final) or out-of-slot tokens left out of ``coarse``
    prompt_tokens: int
    prefix_frames: int = 0


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


def interleave(coarse: Tensor) -> Tensor:
    """(q0, q1) codes [F,2] → token ids [2F]: q0 + Q0, q1 + Q1, frame by frame."""
    return (coarse.to(torch.long) + torch.tensor([Q0, Q1], device=coarse.device)).reshape(-1)


class BackboneRun:
    """One backbone stage for B rows. ``steps(cancel)`` is the stage: a generator of Progress events
    whose return value is one BackboneResult per row. ``coarse_so_far(row)`` reads the frames
    sampled up to the last check (for previews)."""

    def __init__(self, model: Transformer, prompt_ids: list[int], *, generators: list[torch.Generator],
                 max_new_tokens: int, temperature: float, top_k: int, prefix: Tensor | None = None,
                 progress_total: int | None = None, eos_check_every: int = 8) -> None:
        cfg = model.cfg
        if cfg.vocab_size < Q1 + CODEBOOK:
            raise ConfigError(f"Backbone vocab_size={cfg.vocab_size} has no room for the audio tokens "
                              f"(needs {Q1 + CODEBOOK}).")
        if not prompt_ids:
            raise ValueError("empty prompt")
        if not generators:
            raise ValueError("need one generator per row")
        if max_new_tokens < 1 or eos_check_every < 1:
            raise ValueError(f"max_new_tokens and eos_check_every must be >= 1, got {max_new_tokens}, {eos_check_every}")
        self.model, self.prompt_ids, self.generators = model, list(prompt_ids), generators
        self.temperature, self.top_k, self.every = temperature, top_k, eos_check_every
        self.max_new = max_new_tokens
        self.total = progress_total or max_new_tokens
        dev = model.lm_head.weight.device
        self.device = dev
        if prefix is not None and (prefix.dim() != 2 or prefix.shape[1] != 2):
            raise ValueError(f"prefix must be coarse codes [F,2], got {tuple(prefix.shape)}")
        self.prefix = interleave(prefix.to(dev)) if prefix is not None else torch.empty(0, dtype=torch.long, device=dev)
        self.rows = len(generators)
        self.start = self.prefix.numel()  # tokens of the song already there (2F)
        self.out = torch.empty(self.rows, self.start + max_new_tokens, dtype=torch.long, device=dev)
        self.out[:, :self.start] = self.prefix
        self.checked = self.start  # tokens of every row read back by the host
        self.eos_at: list[int | None] = [None] * self.rows

    def coarse_so_far(self, row: int) -> Tensor:
        """(q0, q1) codes [A,2] of ``row`` up to the last check (or its EOS)."""
        end = self.eos_at[row] if self.eos_at[row] is not None else self.checked
        pairs, _ = pair_audio_tokens(self.out[row, :end].tolist())
        return torch.tensor(pairs, dtype=torch.long).view(-1, 2)

    def steps(self, cancel: CancelToken) -> Generator[Progress, None, list[BackboneResult]]:
        model, B, out, dev = self.model, self.rows, self.out, self.device
        W = model.lm_head.weight
        # per slot: candidate ids [EOS, lo..lo+1023] and their lm_head rows [1025,H]
        ids = [torch.cat([torch.tensor([EOS], device=dev), torch.arange(lo, lo + CODEBOOK, device=dev)])
               for lo in (Q0, Q1)]
        slot_rows = [W[i] for i in ids]
        P = len(self.prompt_ids)
        end = self.start + self.max_new
        cache = model.new_cache(B, P + end)
        cancel.check()
        first = torch.cat([torch.tensor(self.prompt_ids, device=dev), self.prefix]).view(1, -1)
        shared = cache.row_view(0)
        h = model.hidden(first, 0, cache=shared)[:, -1].expand(B, -1)  # one prefill for every row
        cache.share_row(shared)
        bad = torch.zeros(B, dtype=torch.bool, device=dev)
        n = self.start
        while n < end:
            cancel.check()
            if n > self.start:
                h = model.hidden(out[:, n - 1:n], P + n - 1, cache=cache)[:, -1]  # [B,H]
            slot = n % 2
            logits = linear(h, slot_rows[slot]).float()  # [B,1025]
            bad |= ~torch.isfinite(logits).all(dim=-1)
            out[:, n] = ids[slot][self._sample(logits)]
            n += 1
            if (n - self.start) % self.every == 0 or n == end:
                ended = self._check(n, bad)
                yield Progress(BACKBONE, n - self.start, max(self.total, n - self.start))
                if ended:
                    break
        return [self._result(row, n) for row in range(B)]

    def _sample(self, logits: Tensor) -> Tensor:
        return sample_top_k_rows(logits, self.top_k, self.temperature, self.generators)

    def _check(self, n: int, bad: Tensor) -> bool:
        """One host sync: EOS positions in [checked, n) of every row, and the non-finite flag.
        True when every row has ended."""
        hits = self.out[:, self.checked:n] == EOS
        first = torch.where(hits.any(dim=-1), hits.to(torch.int8).argmax(dim=-1), -1)
        first_host, bad_host = torch.stack([first, bad.to(first.dtype)]).tolist()
        if any(bad_host):
            row = bad_host.index(1)
            dtype = str(self.model.lm_head.weight.dtype).removeprefix("torch.")
            raise NonFiniteError("backbone", f"variation {row + 1}, by token {n - self.start}", dtype)
        for row, at in enumerate(first_host):
            if at >= 0 and self.eos_at[row] is None:
                self.eos_at[row] = self.checked + at
        self.checked = n
        return all(at is not None for at in self.eos_at)

    def _result(self, row: int, n: int) -> BackboneResult:
        eos = self.eos_at[row]
        kept = self.out[row, :eos if eos is not None else n].tolist()
        pairs, dropped = pair_audio_tokens(kept)
        coarse = torch.tensor(pairs, dtype=torch.long, device=self.device).view(-1, 2)
        generated = (eos + 1 if eos is not None else n) - self.start
        return BackboneResult(coarse=coarse, generated=generated, hit_eos=eos is not None, dropped=dropped,
                              prompt_tokens=len(self.prompt_ids), prefix_frames=self.start // 2)


def generate_audio_tokens(model: Transformer, prompt_ids: list[int], *, max_new_tokens: int, temperature: float,
                          top_k: int, generator: torch.Generator, cancel: CancelToken, prefix: Tensor | None = None,
                          on_token=None, eos_check_every: int = 8) -> BackboneResult:
    """One row, run to its end (tests, benchmarks, tools); ``on_token(done, cap)`` follows progress."""
    run = BackboneRun(model, prompt_ids, generators=[generator], max_new_tokens=max_new_tokens,
                      temperature=temperature, top_k=top_k, prefix=prefix, eos_check_every=eos_check_every)
    report = None if on_token is None else (lambda ev: on_token(ev.done, max_new_tokens))
    result = drain(run.steps(cancel), report)[0]
    if on_token is not None:
        on_token(result.generated, max_new_tokens)
    return result
