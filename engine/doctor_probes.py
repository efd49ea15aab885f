"""The measuring instruments of ``khala doctor`` (engine.doctor runs them).

* ``float32_compute``: run a model whose weights stay in their file dtype (bfloat16, memory-mapped
  on the CPU) in float32, one layer's float32 copy at a time, so the reference costs one layer of
  memory instead of a float32 copy of the whole model. bfloat16 → float32 is exact, so this
  computes what a float32-loaded model computes (a test holds it to that).
* ``NonFiniteWatch``: forward hooks that flag every module whose output holds inf or NaN,
  without a host sync per module.
* ``capture_fallback_ops``: the ops torch ran on the CPU because MPS lacks them.
* ``greedy_probe`` / ``superres_pass_tokens`` / ``decode_speed``: the probes themselves, written
  with Transformer.hidden / new_cache / logits_slice (not the sampling stages).
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Generator, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.device import synchronize
from engine.doctor_report import NEAR_TIE_NATS, Parity, fallback_ops_in
from engine.events import CancelToken, Progress, drain
from engine.model.kv_cache import KVCache
from engine.model.linear import linear
from engine.model.transformer import Transformer
from engine.prompt.special_tokens import AUDIO_BASE
from engine.prompt.special_tokens import CODEBOOK_SIZE as CODEBOOK
from engine.stages.superres import TASK_MARKER_BASE

GIB = 1024**3


# -- float32 reference -----------------------------------------------------------------------------
@contextlib.contextmanager
def float32_compute(model: Transformer) -> Iterator[None]:
    """Within the block, ``model.hidden`` computes in float32 while the weights keep their dtype:
    each layer (and the final norm) gets float32 copies of its parameters for its own forward only.
    A one-column lookup (the backbone) is widened after the lookup, which is exact; a multi-codebook
    sum (super-res) needs the table itself in float32 for that call (a transient float32 copy)."""
    saved: dict[int, list[Tensor]] = {}

    def widen(module: nn.Module, _inputs: object) -> None:
        params = list(module.parameters())
        saved[id(module)] = [p.data for p in params]
        for p in params:
            p.data = p.data.float()

    def restore(module: nn.Module, _inputs: object, out: Tensor) -> Tensor:
        for p, data in zip(module.parameters(), saved.pop(id(module), [])):
            p.data = data
        return out.float()

    def widen_sum(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        tokens = inputs[0]
        if tokens.dim() == 3 and tokens.shape[-1] > 1:
            widen(module, inputs)

    handles = [model.embed.register_forward_pre_hook(widen_sum), model.embed.register_forward_hook(restore)]
    for module in [*model.layers, model.norm]:
        handles += [module.register_forward_pre_hook(widen), module.register_forward_hook(restore)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def slot_logits(model: Transformer, hidden: Tensor, start: int, stop: int) -> Tensor:
    """float32 logits of ids start..stop-1: ``model.logits_slice``, or, for a float32 hidden state of
    a narrower model (the reference), the same product with just those lm_head rows widened."""
    weight = model.lm_head.weight
    if hidden.dtype == weight.dtype:
        return model.logits_slice(hidden, start, stop)
    return linear(hidden, weight[start:stop].to(hidden.dtype)).float()


# -- non-finite values -----------------------------------------------------------------------------
class NonFiniteWatch:
    """Forward hooks on every submodule of ``model``: ``layers()`` lists, in the order they first
    ran, the modules whose output held a non-finite value (children before their parents, so the
    first name is where it started). Flags stay on the device until ``layers()`` reads them."""

    def __init__(self, model: nn.Module, prefix: str) -> None:
        self.prefix = prefix
        self.order: list[str] = []
        self.flags: dict[str, Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(name))
                        for name, m in model.named_modules() if name]

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: object, out: object) -> None:
            tensors = [out] if isinstance(out, Tensor) else [t for t in (out if isinstance(out, tuple) else ())
                                                             if isinstance(t, Tensor)]
            for t in tensors:
                if not t.is_floating_point():
                    continue
                bad = ~torch.isfinite(t).all()
                if name in self.flags:
                    self.flags[name] |= bad
                else:
                    self.order.append(name)
                    self.flags[name] = bad
        return hook

    def layers(self) -> list[str]:
        return [f"{self.prefix}.{name}" for name in self.order if bool(self.flags[name])]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> "NonFiniteWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- CPU fallbacks -----------------------------------------------------------------------------------
@contextlib.contextmanager
def capture_fallback_ops() -> Iterator[list[str]]:
    """Collects, into the yielded list (filled on exit), the ops of torch's MPS CPU-fallback warnings
    raised inside the block. torch warns once per op and process, so ``torch.set_warn_always`` is on
    inside the block: a fallback that an earlier song already reported is reported again. Other
    warnings are shown as usual."""
    ops: list[str] = []
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield ops
            finally:
                ops += fallback_ops_in(str(w.message) for w in caught)
        for w in caught:
            if not fallback_ops_in([str(w.message)]):
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    finally:
        torch.set_warn_always(before)


# -- comparison ----------------------------------------------------------------------------------------
def compare(reference: Tensor, candidate: Tensor) -> tuple[float, float]:
    """(cosine, max absolute error) of two same-shaped tensors, flattened, in float64 on the CPU."""
    a = reference.detach().to("cpu", torch.float64).flatten()
    b = candidate.detach().to("cpu", torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(reference.shape)} vs {tuple(candidate.shape)}")
    cosine = float(F.cosine_similarity(a, b, dim=0, eps=1e-30))
    return cosine, float((a - b).abs().max()) if a.numel() else 0.0


def agreement(ref_logits: Tensor, ref_choice: Tensor, dev_choice: Tensor) -> tuple[int, int]:
    """(matches, near-ties): ``dev_choice`` equal to the reference's argmax ``ref_choice``, or not
    equal but within NEAR_TIE_NATS of it in the reference's own float32 logits [N, V]."""
    ref_logits = ref_logits.float().cpu()
    ref_choice, dev_choice = ref_choice.cpu(), dev_choice.cpu()
    same = ref_choice == dev_choice
    gap = ref_logits.gather(-1, ref_choice[:, None]) - ref_logits.gather(-1, dev_choice[:, None])
    ties = (~same) & (gap[:, 0] < NEAR_TIE_NATS)
    return int(same.sum()), int(ties.sum())


# -- the backbone --------------------------------------------------------------------------------------
@dataclass
class GreedyRun:
    hidden: Tensor  # [P + steps - 1, H] float32, CPU: every final hidden state of the run
    logits: Tensor  # [steps, 1024] float32, CPU: the slot's logits before each token
    choice: Tensor  # [steps] long, CPU: argmax of each row of ``logits`` (index within the slot)
    tokens: list[int]  # the token ids fed (the run's own greedy picks, or ``forced``)


def greedy_steps(model: Transformer, prompt_ids: list[int], steps: int, *, stage: str,
                 cache_dtype: torch.dtype | None = None, forced: list[int] | None = None,
                 cancel: CancelToken | None = None) -> Generator[Progress, None, GreedyRun]:
    """Prefill ``prompt_ids`` into a KV cache, then ``steps`` one-token decode steps, greedy within
    each step's slot (q0 codes on even steps, q1 on odd; EOS left out so every run is ``steps`` long),
    yielding Progress(stage, step, steps). With ``forced``, those tokens are fed instead of the run's
    own picks (teacher forcing), so a device run is judged step by step on the reference's prefix."""
    device = model.lm_head.weight.device
    P = len(prompt_ids)
    if cache_dtype is None:
        cache = model.new_cache(1, P + steps)
    else:  # the float32 reference keeps float32 keys and values
        cache = KVCache(model.cfg, 1, P + steps, device=device, dtype=cache_dtype)
    h = model.hidden(torch.tensor([prompt_ids], device=device), 0, cache=cache)
    hiddens, logits, tokens = [h[0].float().cpu()], [], []
    for n in range(steps):
        if cancel is not None:
            cancel.check()
        lo = AUDIO_BASE + CODEBOOK * (n % 2)
        row = slot_logits(model, h[:, -1], lo, lo + CODEBOOK)[0]  # [1024]
        logits.append(row.cpu())
        tokens.append(forced[n] if forced is not None else lo + int(row.argmax()))
        yield Progress(stage, n + 1, steps)
        if n + 1 < steps:
            h = model.hidden(torch.tensor([[tokens[-1]]], device=device), P + n, cache=cache)
            hiddens.append(h[0].float().cpu())
    stacked = torch.stack(logits)
    return GreedyRun(torch.cat(hiddens), stacked, stacked.argmax(-1), tokens)


def greedy_probe(model: Transformer, prompt_ids: list[int], steps: int, *, cache_dtype: torch.dtype | None = None,
                 forced: list[int] | None = None) -> GreedyRun:
    """``greedy_steps`` run to its end."""
    return drain(greedy_steps(model, prompt_ids, steps, stage="greedy", cache_dtype=cache_dtype, forced=forced))


def backbone_parity(reference: GreedyRun, device_run: GreedyRun) -> Parity:
    cosine, err = compare(reference.hidden, device_run.hidden)
    matches, ties = agreement(reference.logits, reference.choice, device_run.choice)
    return Parity(cosine, err, len(reference.tokens), matches, ties)


def decode_speed(model: Transformer, position: int, steps: int, warmup: int = 2) -> float:
    """Backbone tokens/s of the decode step (one token through every layer against ``position`` cached
    keys, then the slot's 1024 lm_head rows and an argmax, as the backbone stage does per token),
    with the cache's first ``position`` entries left at zero: attention reads them all the same."""
    device = model.lm_head.weight.device
    cache = model.new_cache(1, position + warmup + steps)
    cache.advance(position)
    rows = model.lm_head.weight[AUDIO_BASE:AUDIO_BASE + CODEBOOK]
    token = torch.full((1, 1), AUDIO_BASE, dtype=torch.long, device=device)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        h = model.hidden(token, cache.length, cache=cache)[:, -1]
        token = (F.linear(h, rows).argmax(-1) + AUDIO_BASE).view(1, 1)
    synchronize(device)
    return steps / max(time.perf_counter() - start, 1e-9)


# -- super-res -------------------------------------------------------------------------------------------
def superres_pass_tokens(text_ids: list[int], codes: Tensor, idx: int) -> Tensor:
    """The input of super-res pass ``idx`` (SPEC §7): rows 0..T-1 the prompt in column 0 with the
    task marker 128255 - idx on its last (BOA) row, rows T.. the frames' codes of codebooks
    0..idx-1 ([A, ≥ idx] codes 0..1023) as audio token ids; pads -1. Returns [1, T + A, idx] long."""
    T, A = len(text_ids), codes.shape[0]
    tokens = torch.full((1, T + A, idx), -1, dtype=torch.long)
    tokens[0, :T, 0] = torch.tensor(text_ids, dtype=torch.long)
    tokens[0, T - 1, 0] = TASK_MARKER_BASE - idx
    tokens[0, T:, :idx] = codes[:, :idx].long() + AUDIO_BASE + CODEBOOK * torch.arange(idx)
    return tokens


def superres_probe(model: Transformer, text_ids: list[int], codes: Tensor, idx: int) -> tuple[Tensor, Tensor]:
    """One non-causal super-res pass: (final hidden [T + A, H] float32 CPU, codebook ``idx``'s
    logits of the A frames [A, 1024] float32 CPU)."""
    tokens = superres_pass_tokens(text_ids, codes, idx).to(model.lm_head.weight.device)
    h = model.hidden(tokens, 0, causal=False)
    base = AUDIO_BASE + CODEBOOK * idx
    logits = slot_logits(model, h[:, len(text_ids):], base, base + CODEBOOK)[0]
    return h[0].float().cpu(), logits.cpu()


# -- memory ----------------------------------------------------------------------------------------------
class PeakMemory:
    """Largest memory seen: the process's peak resident set (ru_maxrss, for its whole life) and, on
    CUDA, torch's peak allocation since the start; on MPS, the Metal driver's allocation, sampled
    whenever ``sample()`` is called. ``gb`` is the largest of them, in GiB."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.device_peak = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def sample(self) -> None:
        if self.device.type == "cuda":
            self.device_peak = max(self.device_peak, int(torch.cuda.max_memory_allocated(self.device)))
        elif self.device.type == "mps":
            self.device_peak = max(self.device_peak, int(torch.mps.driver_allocated_memory()))

    @staticmethod
    def process_peak() -> int:
        try:
            import resource
        except ImportError:  # Windows
            return 0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux

    @property
    def gb(self) -> float:
        self.sample()
        return max(self.process_peak(), self.device_peak) / GIB
