"""Peak-memory estimate for a request, before anything is loaded (SPEC §3, §6–§9).

Imports neither torch nor Qt: the app asks it "will this fit?" before starting the
engine. Device and dtype are plain strings. The pipeline keeps one model resident at a
time, so the peak is the largest stage plus a fixed runtime overhead:

* backbone: weights + the static KV cache, preallocated for prompt + max new tokens
  (the upstream cap 23 552 unless the request sets ``max_tokens``) + prefill/decode
  working memory (query-chunked attention scores, MLP intermediates); N variations
  decode as N rows of one batch: cache and activations × N;
* super-res: weights + one non-causal pass at S = prompt + frames (scores are
  O(block · S) per head, never S²), one variation at a time unless batched;
* decoder (float32 on every device, as upstream, unless KHALA_DECODER_DTYPE says otherwise):
  weights + one decoder window (window + 2 halo frames × 2048 samples) through the last,
  widest-in-samples block, whose live activations were measured (benchmarks/); every
  variation's song stays in memory until all are decoded.
* a model load: the weights + one 16 MiB read slice (engine/model/loader.py reads the file
  with plain reads, nothing mapped).

The working-memory multipliers were fitted to peaks measured in fresh processes
(benchmarks/results/); the README's "Performance" section lists estimate/measured.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

from engine.prompt.template import BACKBONE_CAP as BACKBONE_PROMPT_CAP
from engine.prompt.template import SUPERRES_CAP as SUPERRES_PROMPT_CAP
from engine.request import SAMPLES_PER_FRAME, UPSTREAM_TOKEN_CAP, expected_tokens

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2}
DEFAULT_DTYPE = {"mps": "float16", "cuda": "bfloat16", "cpu": "float32"}
GIB = 1024**3

# Copies of engine/model/attention.py's, engine/model/loader.py's and engine/stages/codec.py's values
# (they import torch; a test keeps these equal).
SCORE_BUDGET = 1 << 28  # float32 elements of one attention block's scores
CPU_SCORE_BLOCK = 1 << 22  # the same on the CPU (sized for its cache)
ATTN_BLOCK = 1024
DECODE_QUERIES = 16  # attention calls with at most this many queries read a narrow K/V cache as stored
KEY_CHUNK = 1 << 20  # float32 elements of one converted K/V slice in such calls (CPU)
READ_CHUNK_BYTES = 16 << 20  # the loader's read + conversion slice
CHUNK_FRAMES = 1920
# Frames per call of the convolutional decoder: engine/codec.py decodes each chunk in
# WINDOW_FRAMES windows with HALO_FRAMES of context on each side (a test keeps these equal).
CODEC_WINDOW_FRAMES = 384
CODEC_HALO_FRAMES = 16
DECODER_WINDOW_FRAMES = CODEC_WINDOW_FRAMES + 2 * CODEC_HALO_FRAMES

# Fixed runtime overhead: interpreter + torch + engine + tokenizer (measured on CPU: 0.23 GB after import, 0.3–0.38 GB with the tokenizer);
# the Metal / CUDA runtimes add their own.
OVERHEAD = {"cpu": int(0.3 * GIB), "mps": int(0.8 * GIB), "cuda": int(0.8 * GIB)}
# Live [C, samples] activations at the decoder's last block, in units of one activation
# (measured on CPU, fp32: 5.0 for a full 1920-frame chunk at n_filters 24; 4.6–5.8 at the real
# 192 for 64–768-frame chunks, falling with length: benchmarks/decoder_bench.py).
DECODER_LIVE_ACTIVATIONS = 5.0
# Share of physical memory a song may use before we warn (macOS keeps ~1/4 for itself and
# caps Metal's working set near 3/4 of RAM).
USABLE_FRACTION = {"mps": 0.75, "cpu": 0.85, "cuda": 0.95}


@dataclass(frozen=True)
class TransformerShape:
    hidden: int = 2048
    layers: int = 24
    heads: int = 32
    groups: int = 8
    head_dim: int = 64
    ffn: int = 5632
    padded_vocab: int = 130432

    @property
    def params(self) -> int:
        H, N, G, d, F = self.hidden, self.heads, self.groups, self.head_dim, self.ffn
        attn = H * N * d + N * d + 2 * (H * G * d + G * d) + N * d * H + H
        mlp = 2 * (H * F + F) + F * H + H
        layer = attn + mlp + 2 * H
        return self.layers * layer + 2 * self.padded_vocab * H + H

    @classmethod
    def of(cls, cfg: Any) -> "TransformerShape":
        """From an engine.model.config.ModelConfig (or anything with the same attributes)."""
        return cls(cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_groups, cfg.head_dim,
                   cfg.ffn_hidden_size, cfg.padded_vocab_size)


@dataclass(frozen=True)
class DecoderShape:
    d_latent: int = 128
    n_filters: int = 192
    rates: tuple[int, ...] = (8, 8, 8, 4)
    out_channel: int = 2
    num_quantizers: int = 64
    codebook_size: int = 1024

    @property
    def channels(self) -> list[int]:
        n = len(self.rates)
        return [self.n_filters * 2 ** (n - i) for i in range(n + 1)]

    @property
    def params(self) -> int:
        ch = self.channels
        p = self.d_latent * ch[0] * 7 + ch[0]
        for c_in, c_out, s in zip(ch, ch[1:], self.rates):
            p += c_in + c_in * c_out * 2 * s + c_out  # snake α, transposed conv
            p += 3 * (2 * c_out + c_out * c_out * 7 + c_out + c_out * c_out + c_out)  # residual units
        p += ch[-1] + ch[-1] * self.out_channel * 7 + self.out_channel
        return p + self.num_quantizers * self.codebook_size * self.d_latent

    @classmethod
    def of(cls, cfg: Any) -> "DecoderShape":
        """From an engine.stages.decoder_config.DecoderConfig (or anything with the same attributes)."""
        return cls(cfg.d_latent, cfg.n_filters, tuple(cfg.rates), cfg.out_channel, cfg.num_quantizers,
                   cfg.codebook_size)


REAL_BACKBONE = TransformerShape()
REAL_SUPERRES = TransformerShape(padded_vocab=193792)
REAL_DECODER = DecoderShape()


@dataclass(frozen=True)
class StageMemory:
    weights: int
    state: int  # KV cache / token table / output buffer: lives for the whole stage
    work: int  # transient working memory at the stage's worst moment
    load: int = 0  # transient on top of the weights while they load (the loader's read slice)

    @property
    def run(self) -> int:
        """Peak while the stage computes (models resident, loading done)."""
        return self.weights + self.state + self.work

    @property
    def total(self) -> int:
        return max(self.run, self.weights + self.load)


@dataclass(frozen=True)
class MemoryEstimate:
    backbone: StageMemory
    superres: StageMemory
    decoder: StageMemory
    overhead: int
    device: str
    dtype: str
    prompt_tokens: int
    cache_positions: int
    frames: int
    variations: int = 1

    @property
    def stages(self) -> dict[str, StageMemory]:
        return {"backbone": self.backbone, "superres": self.superres, "decoder": self.decoder}

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=lambda k: self.stages[k].total)

    @property
    def peak(self) -> int:
        return self.overhead + max(s.total for s in self.stages.values())


def device_kind(device: str) -> str:
    kind = (device or "auto").split(":")[0].lower()
    if kind == "auto":
        return "mps" if sys.platform == "darwin" and platform.machine() == "arm64" else "cpu"
    if kind not in OVERHEAD:
        raise ValueError(f"unknown device {device!r}: use auto, mps, cuda or cpu")
    return kind


def dtype_bytes(dtype: str, device: str = "cpu") -> int:
    name = (dtype or "auto").removeprefix("torch.").lower()
    if name == "auto":
        name = DEFAULT_DTYPE[device_kind(device)]
    if name not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    return DTYPE_BYTES[name]


def expected_frames(minutes: int) -> int:
    """Audio frames of a ``minutes`` song at the progress estimate 2584·(d + 0.8) tokens, 2 per frame."""
    return expected_tokens(minutes) // 2


def guess_prompt_tokens(request: Any) -> int:
    """Prompt length before tokenizing: ~1 BPE token per 3.5 characters, plus the template."""
    chars = sum(len(getattr(request, f, "") or "") for f in ("tags", "description", "genre", "lyrics"))
    return min(BACKBONE_PROMPT_CAP, 32 + math.ceil(chars / 3.5))


def attention_work(q_len: int, k_len: int, s: TransformerShape, b: int, *, causal: bool, rows: int = 1,
                   budget: int = SCORE_BUDGET) -> int:
    """One query block's float32 scores (softmax in place, so one buffer; + the causal mask), the
    float32 query copy and output, and the float32 K/V copies when the dtype is narrower. A decode
    step (few queries) against a narrow cache copies no K/V (one KEY_CHUNK slice on the CPU) and
    its small score block is soft-maxed out of place (two buffers)."""
    block = max(1, min(ATTN_BLOCK, budget // max(1, rows * s.heads * k_len)))
    n = min(block, q_len)
    few = b < 4 and q_len <= DECODE_QUERIES
    scores = rows * n * s.heads * k_len * 4 * (2 if few else 1) + (n * k_len if causal else 0)
    kv32 = 0 if b >= 4 else KEY_CHUNK * 4 if few else rows * 2 * s.groups * k_len * s.head_dim * 4
    return scores + kv32 + rows * q_len * s.heads * s.head_dim * (4 + b)


def layer_work(q_len: int, k_len: int, s: TransformerShape, b: int, *, causal: bool, rows: int = 1,
               budget: int = SCORE_BUDGET) -> int:
    """Worst moment inside one layer: the residual stream plus max(attention, MLP) intermediates
    for ``rows`` sequences of q_len queries each."""
    stream = rows * q_len * s.hidden * (3 * b + 2 * 4)  # x, h, normed; float32 norm temporaries
    qkv = rows * q_len * (s.heads + 2 * s.groups) * s.head_dim * b * 2  # q, k, v and their RoPE copies
    mlp = rows * q_len * s.ffn * b * 4  # gate, up, silu(gate), product
    return stream + max(qkv + attention_work(q_len, k_len, s, b, causal=causal, rows=rows, budget=budget), mlp)


def transformer_load(s: TransformerShape) -> int:
    """Transient on top of the weights while a transformer loads (engine/model/loader.py): one read
    slice; the file is read with plain reads, so its pages are the OS's cache, not this process's
    (measured at real width: benchmarks/load_peak.py)."""
    return READ_CHUNK_BYTES


def backbone_memory(s: TransformerShape, b: int, prompt: int, max_new: int, rows: int = 1,
                    budget: int = SCORE_BUDGET) -> StageMemory:
    """``rows`` variations decoded as one batch (one cache row each); ``budget``: scores per block."""
    positions = prompt + max_new
    cache = rows * 2 * s.layers * s.groups * positions * s.head_dim * b
    prefill = layer_work(prompt, prompt, s, b, causal=True, rows=rows, budget=budget)
    decode = layer_work(1, positions, s, b, causal=True, rows=rows)
    slots = 2 * 1025 * s.hidden * b + rows * max_new * 8  # per-slot lm_head rows, token buffer
    return StageMemory(s.params * b, cache + slots, max(prefill, decode), transformer_load(s))


def superres_memory(s: TransformerShape, b: int, text: int, frames: int, rows: int = 1,
                    budget: int = SCORE_BUDGET) -> StageMemory:
    """``rows`` variations expanded at once (1: one after another); ``budget``: scores per block."""
    S = text + frames
    tokens = rows * S * 64 * 8
    embed = rows * S * s.hidden * b * 3
    logits = rows * frames * 1024 * 4 * 3  # float32 logits, top-k and softmax
    work = max(layer_work(S, S, s, b, causal=False, rows=rows, budget=budget), embed) + rows * S * s.hidden * b + logits
    return StageMemory(s.params * b, tokens, work, transformer_load(s))


def decoder_dtype_bytes() -> int:
    return DTYPE_BYTES.get(os.environ.get("KHALA_DECODER_DTYPE") or "float32", 4)


def decoder_memory(d: DecoderShape, b: int, frames: int, rows: int = 1, songs: int = 1) -> StageMemory:
    """``rows`` variations decoded at once; ``songs`` decoded songs held until the last is done."""
    chunk = min(frames, CHUNK_FRAMES, DECODER_WINDOW_FRAMES)
    samples = chunk * SAMPLES_PER_FRAME
    act = rows * d.channels[-1] * samples * b
    song = d.out_channel * frames * SAMPLES_PER_FRAME * 4  # float32, on the host
    out = max(songs, rows) * song + rows * song  # the songs + one chunk copy per row in flight
    load = d.params * 4 * 2  # engine/codec.py: mapped float32 file + weight-norm-folded float32 copy
    return StageMemory(d.params * b, out, int(DECODER_LIVE_ACTIVATIONS * act), load)


BATCHED = ("backbone",)  # stages that run every variation at once (the others: one after another)


PREVIEW_WINDOW_FRAMES = 64  # engine/stages/preview.py's decode window (tied by a test)


def estimate_peak_bytes(request: Any, *, device: str, dtype: str, backbone_cfg: Any = None,
                        superres_cfg: Any = None, decoder_cfg: Any = None, prompt_tokens: int | None = None,
                        superres_prompt_tokens: int | None = None, frames: int | None = None,
                        variations: int | None = None, batched: tuple[str, ...] = BATCHED,
                        preview: bool = False) -> MemoryEstimate:
    """Per-stage and peak bytes for ``request`` (an engine.request.SongRequest) on ``device`` in ``dtype``.

    Frames default to the expected length of the requested duration (what super-res and
    the decoder then allocate); the backbone's KV cache is what the pipeline preallocates.
    variations: N (default: the request's); the stages named in ``batched`` hold all N at once.
    preview: rough previews are on, so the decoder is resident during the backbone and decodes one
    window of coarse frames at a time beside it (engine/stages/preview.py).
    """
    kind = device_kind(device)
    b = dtype_bytes(dtype, kind)
    bb = TransformerShape.of(backbone_cfg) if backbone_cfg is not None else REAL_BACKBONE
    sr = TransformerShape.of(superres_cfg) if superres_cfg is not None else REAL_SUPERRES
    dec = DecoderShape.of(decoder_cfg) if decoder_cfg is not None else REAL_DECODER
    prompt = prompt_tokens if prompt_tokens is not None else guess_prompt_tokens(request)
    text = superres_prompt_tokens if superres_prompt_tokens is not None else min(prompt, SUPERRES_PROMPT_CAP)
    max_new = getattr(request, "max_tokens", None) or UPSTREAM_TOKEN_CAP
    n_frames = frames if frames is not None else min(expected_frames(request.minutes), max_new // 2)
    n_frames = max(1, n_frames)
    n = max(1, int(variations if variations is not None else getattr(request, "variations", 1) or 1))

    def rows(stage: str) -> int:
        return n if stage in batched else 1
    budget = CPU_SCORE_BLOCK if kind == "cpu" else SCORE_BUDGET
    backbone = backbone_memory(bb, b, prompt, max_new, rows("backbone"), budget)
    if preview:
        window = decoder_memory(dec, decoder_dtype_bytes(), min(n_frames, PREVIEW_WINDOW_FRAMES))
        backbone = StageMemory(backbone.weights + window.weights, backbone.state + n_frames * SAMPLES_PER_FRAME * 2 * 4,
                               max(backbone.work, window.work), backbone.load)
    return MemoryEstimate(
        backbone=backbone,
        superres=superres_memory(sr, b, text, n_frames, rows("superres"), budget),
        decoder=decoder_memory(dec, decoder_dtype_bytes(), n_frames, rows("decoder"), songs=n),
        overhead=OVERHEAD[kind], device=kind, dtype=(dtype or "auto"), prompt_tokens=prompt,
        cache_positions=prompt + max_new, frames=n_frames, variations=n)


def total_memory_bytes() -> int | None:
    """Physical memory (on Apple silicon this unified memory is also the GPU's)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def available_memory_bytes(device: str) -> int | None:
    """Memory a song may use on ``device``: physical memory for cpu and mps; for cuda the
    free device memory when torch is already imported, else None (unknown)."""
    kind = device_kind(device)
    if kind == "cuda":
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info()[0])
    return total_memory_bytes()


def memory_warning(request: Any, device: str, dtype: str, **kw: Any) -> str | None:
    """One line for the user when this machine has less memory than the request needs, else None."""
    est = estimate_peak_bytes(request, device=device, dtype=dtype, **kw)
    have = available_memory_bytes(device)
    if have is None:
        return None
    usable = have * USABLE_FRACTION[est.device]
    if est.peak <= usable:
        return None
    return (f"This song needs about {est.peak / GIB:.1f} GB of memory at its peak ({est.peak_stage}); "
            f"this machine has {have / GIB:.1f} GB, so it may swap heavily or fail. "
            "Close other apps or choose a shorter song.")


def describe(est: MemoryEstimate) -> str:
    rows = [f"{name:9s} {st.total / GIB:6.2f} GB (weights {st.weights / GIB:.2f}, state {st.state / GIB:.2f}, "
            f"work {st.work / GIB:.2f}, load +{st.load / GIB:.2f})" for name, st in est.stages.items()]
    return "\n".join(rows + [f"peak      {est.peak / GIB:6.2f} GB ({est.peak_stage} + overhead "
                             f"{est.overhead / GIB:.2f})"])
