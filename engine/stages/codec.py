"""DAC RVQ decoder (SPEC §8): 64 codebooks × 1024 → stereo 44.1 kHz, weight norm folded at load.

Module names mirror the published state dict (``decoder.model.N...``), so the file's
``X.weight_g`` / ``X.weight_v`` pair becomes this module's ``X.weight``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Generator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.stages.decoder_config import NUM_QUANTIZERS, DecoderConfig, load_decoder_config
from engine.errors import NonFiniteError, RequestError, WeightsError
from engine.events import DECODE, CancelToken, Progress, drain
from engine.prompt.special_tokens import CODEBOOK_SIZE
CHUNK_FRAMES = 1920
OVERLAP_FRAMES = 480
# Frames per decoder call inside a chunk, and the context kept on each side (see decode_span).
WINDOW_FRAMES = 384
HALO_FRAMES = 16


# ---------------------------------------------------------------- modules

class Snake(nn.Module):
    """x + sin²(αx) / (α + 1e-9), α per channel (stored [1, C, 1] as in DAC)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1/(α + 1e-9) in float32: the 1e-9 vanishes in fp16. Clamped to x's finite range: for
        # |α| < ~1.5e-5 it overflows fp16, and inf · sin²(αx) (which underflows to 0) is NaN.
        big = torch.finfo(x.dtype).max
        inv = (self.alpha.float() + 1e-9).reciprocal().clamp(-big, big).to(x.dtype)
        return x + inv * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(channels),
            nn.Conv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation),
            Snake(channels),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        crop = (x.shape[-1] - y.shape[-1]) // 2
        if crop > 0:
            x = x[..., crop:crop + y.shape[-1]]
        return x + y


class DecoderBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(c_in),
            nn.ConvTranspose1d(c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2),
                               output_padding=stride % 2),
            ResidualUnit(c_out, 1),
            ResidualUnit(c_out, 3),
            ResidualUnit(c_out, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConvDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        n = len(cfg.rates)
        ch = [cfg.n_filters * 2 ** (n - i) for i in range(n + 1)]  # 3072, 1536, 768, 384, 192
        self.model = nn.Sequential(
            nn.Conv1d(cfg.d_latent, ch[0], 7, padding=3),
            *[DecoderBlock(ch[i], ch[i + 1], s) for i, s in enumerate(cfg.rates)],
            Snake(ch[-1]),
            nn.Conv1d(ch[-1], cfg.out_channel, 7, padding=3),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


class DacDecoder(nn.Module):
    """Codes [64, T] (or [B, 64, T]) → audio [B, 2, T·2048]. No encoder, no tanh."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.register_buffer("codebooks", torch.zeros(cfg.num_quantizers, cfg.codebook_size, cfg.dim))
        self.decoder = ConvDecoder(cfg)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Σ_k codebook_k[codes_k]: [B, 64, T] → latent [B, dim, T], summed in float32."""
        z = torch.zeros(codes.shape[0], codes.shape[2], self.config.dim, device=codes.device, dtype=torch.float32)
        for k in range(codes.shape[1]):
            z += F.embedding(codes[:, k], self.codebooks[k]).float()
        return z.transpose(1, 2).to(self.codebooks.dtype)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        return self.decoder(self.embed(codes))


# ---------------------------------------------------------------- weights

def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weight = g · v / ‖v‖, norm over every dim but 0 (PyTorch weight_norm, dim=0), in float32."""
    v = v.float()
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return g.float().reshape(norm.shape) * v / norm


def expected_decoder_tensors(cfg: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """File name → shape for every ``decoder.*`` tensor (119 for four rates)."""
    out: dict[str, tuple[int, ...]] = {}
    with torch.device("meta"):
        shapes = ConvDecoder(cfg)
    for name, p in shapes.named_parameters(prefix="decoder"):
        if name.endswith(".weight"):
            base = name[: -len(".weight")]
            out[base + ".weight_g"] = (p.shape[0], 1, 1)
            out[base + ".weight_v"] = tuple(p.shape)
        else:
            out[name] = tuple(p.shape)
    return out


def codebook_names(k: int) -> tuple[str, str]:
    return f"quantizer.vq_layer_{k}._codebook.embed", f"quantizer.embed_{k}"


def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise WeightsError(f"Decoder weights not found: {path}.")
    try:
        try:
            state = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError:  # mmap needs the zip format; an older torch.save format still loads
            state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises pickle, zip, EOF and runtime errors for a bad file
        raise WeightsError(f"Cannot read decoder weights {path}: the file is truncated, corrupt or not a "
                           f"plain dict of tensors ({type(e).__name__}). Download it again.") from e
    if not isinstance(state, dict):
        raise WeightsError(f"Decoder weights {path} hold a {type(state).__name__}, not a dict of tensors.")
    if any(str(k).startswith(("generator.", "state_dict")) for k in state):
        raise WeightsError(f"Decoder weights {path} look like the original training checkpoint; "
                           "use the converted decoder_weights.pt.")
    return state


def _tensor(state: Mapping[str, Any], path: Path, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    t = state.get(name)
    if t is None:
        raise WeightsError(f"Decoder weights {path.name}: missing tensor '{name}'.")
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise WeightsError(f"Decoder weights {path.name}: '{name}' is not a floating-point tensor.")
    if tuple(t.shape) != shape:
        raise WeightsError(f"Decoder weights {path.name}: '{name}' has shape {list(t.shape)}, expected {list(shape)}.")
    return t


def load_decoder(weights_path: Path | str, config_path: Path | str, device: torch.device | str,
                 dtype: torch.dtype) -> DacDecoder:
    """Strict load: every decoder tensor and codebook present with its shape; ``encoder.*`` never read."""
    cfg = load_decoder_config(config_path)
    path = Path(weights_path)
    state = _read_state(path)
    expected = expected_decoder_tensors(cfg)
    extra = sorted(k for k in state if str(k).startswith("decoder.") and k not in expected)
    if extra:
        raise WeightsError(f"Decoder weights {path.name}: unexpected tensor '{extra[0]}' "
                           "(does the decoder_config.yaml match the weights?).")
    folded: dict[str, torch.Tensor] = {}
    for name, shape in expected.items():
        t = _tensor(state, path, name, shape)
        if name.endswith(".weight_g"):
            base = name[: -len("_g")]
            folded[base] = fold_weight_norm(t, _tensor(state, path, base + "_v", expected[base + "_v"]))
        elif not name.endswith(".weight_v"):
            folded[name] = t.to(torch.float32, copy=True)  # no view into the mapped file
    books = []
    for k in range(cfg.num_quantizers):
        first, second = codebook_names(k)
        name = first if first in state or second not in state else second
        books.append(_tensor(state, path, name, (cfg.codebook_size, cfg.dim)).float())
    folded["codebooks"] = torch.stack(books)
    del state
    with torch.device("meta"):
        model = DacDecoder(cfg)
    model.load_state_dict(folded, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


# ---------------------------------------------------------------- chunked decode

def chunk_plan(frames: int, chunk: int = CHUNK_FRAMES, overlap: int = OVERLAP_FRAMES) -> list[tuple[int, int]]:
    """Frame ranges [start, stop) with stride chunk - overlap, stopping at the first chunk that reaches the end.

    Upstream keeps striding past the end and decodes a tail of ≤ overlap frames; here the
    last chunk always holds more than ``overlap`` frames, so every seam overlaps exactly
    ``overlap`` frames and every sample comes from a chunk with ≥ ``overlap`` frames of context.
    """
    if chunk < 1 or overlap < 0 or 2 * overlap > chunk:
        raise ValueError(f"need chunk ≥ 1 and 0 ≤ overlap ≤ chunk / 2; got chunk={chunk}, overlap={overlap}")
    if frames < 1:
        return []
    plan, start = [], 0
    while True:
        stop = min(start + chunk, frames)
        plan.append((start, stop))
        if stop == frames:
            return plan
        start += chunk - overlap


def check_codes(codes: torch.Tensor | np.ndarray, num_quantizers: int = NUM_QUANTIZERS,
                size: int = CODEBOOK_SIZE) -> None:
    """RequestError unless ``codes`` is [num_quantizers, frames ≥ 1] of integers in 0..size-1.

    Any integer dtype is accepted, torch or NumPy (int8..int64, uint8..uint64): the values are
    compared after widening to 64 bits, so uint8 is not misread as out of range and uint16,
    which has no CPU comparison kernel in torch, is not a crash. Float, complex and bool are
    refused by name."""
    shape = list(codes.shape)
    if len(shape) != 2 or shape[0] != num_quantizers or shape[1] < 1:
        raise RequestError(f"Codes must have shape [{num_quantizers}, frames]; got {shape}.")
    wide = _widened(codes)
    bad = (wide < 0) | (wide >= size)
    if bool(bad.any()):
        k, t = (int(i) for i in (bad.nonzero()[0] if isinstance(bad, torch.Tensor) else np.argwhere(bad)[0]))
        raise RequestError(f"Code {int(wide[k, t])} at codebook {k}, frame {t} is outside 0..{size - 1}.")


_SIGNED_TORCH = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _widened(codes: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """int64 values (uint64 kept unsigned, in NumPy, so no large value wraps to a small one)."""
    if isinstance(codes, torch.Tensor):
        if codes.dtype in _SIGNED_TORCH:
            return codes.to(torch.int64)
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise RequestError(f"Codes must be integers; got {str(codes.dtype).removeprefix('torch.')}.")
        codes = codes.detach().cpu().numpy()  # uint16/32/64: NumPy compares them
    array = np.asarray(codes)
    if array.dtype.kind == "u":
        return array.astype(np.uint64)
    if array.dtype.kind == "i":
        return array.astype(np.int64)
    raise RequestError(f"Codes must be integers; got {array.dtype}.")


def decode_span(decoder: DacDecoder, z: torch.Tensor, *, window: int = WINDOW_FRAMES,
                halo: int = HALO_FRAMES) -> torch.Tensor:
    """Latent [1, dim, L] → audio [1, 2, L·hop] as one decoder call on all L frames would give it,
    computed ``window`` frames at a time with ``halo`` frames of context on each side.

    The decoder's receptive field is about 11 latent frames each way (the final conv, each
    block's residual units (3 + 9 + 27 samples) and transposed conv, then the first conv), so
    with halo ≥ 12 every kept sample sees exactly the inputs it would see in the whole call,
    while the [192, samples] activations of the last block are bounded by the window.
    NonFiniteError as soon as one window's output holds NaN or inf.
    """
    L, hop = z.shape[-1], decoder.config.hop
    if window <= 0 or L <= window + 2 * halo:
        return _finite(decoder.decoder(z), 0, L)
    parts = []
    for a in range(0, L, window):
        b = min(a + window, L)
        lo, hi = max(0, a - halo), min(L, b + halo)
        y = _finite(decoder.decoder(z[..., lo:hi]), lo, hi)
        parts.append(y[..., (a - lo) * hop:(b - lo) * hop])
    return torch.cat(parts, dim=-1)


def _finite(y: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    if not bool(torch.isfinite(y).all()):
        raise NonFiniteError("decode", f"frames {lo}..{hi - 1}", str(y.dtype).removeprefix("torch."))
    return y


def decode_chunks(decoder: DacDecoder, codes: torch.Tensor, *, chunk: int = CHUNK_FRAMES,
                  overlap: int = OVERLAP_FRAMES, window: int = WINDOW_FRAMES, halo: int = HALO_FRAMES,
                  cancel: CancelToken | None = None) -> Generator[Progress, None, torch.Tensor]:
    """The stage: codes [64, T] → float32 CPU audio [2, T·2048], decoded chunk by chunk (upstream's
    1920/480 plan), seams joined by a linear crossfade; each chunk computed in bounded-memory
    windows. Yields Progress after each chunk."""
    check_codes(codes, decoder.config.num_quantizers, decoder.config.codebook_size)
    hop = decoder.config.hop
    frames = codes.shape[1]
    plan = chunk_plan(frames, chunk, overlap)
    device = decoder.codebooks.device
    out = torch.empty(decoder.config.out_channel, frames * hop, dtype=torch.float32)
    fade = (torch.arange(overlap * hop, dtype=torch.float32) + 0.5) / max(overlap * hop, 1)
    with torch.inference_mode():
        z = decoder.embed(codes.to(device=device, dtype=torch.long).unsqueeze(0))
        prev_stop = 0
        for i, (start, stop) in enumerate(plan):
            if cancel is not None:
                cancel.check()
            y = decode_span(decoder, z[..., start:stop], window=window, halo=halo)[0].to("cpu", torch.float32)
            if y.shape[-1] != (stop - start) * hop:
                raise RuntimeError(f"decoder gave {y.shape[-1]} samples for {stop - start} frames")
            n = (prev_stop - start) * hop  # samples shared with the previous chunk
            if n > 0:
                seam = slice(start * hop, prev_stop * hop)
                out[:, seam] = torch.lerp(out[:, seam], y[:, :n], fade[:n])
            out[:, prev_stop * hop:stop * hop] = y[:, n:]
            prev_stop = stop
            yield Progress(DECODE, i + 1, len(plan))
    return out


def decode_codes(decoder: DacDecoder, codes: torch.Tensor, *, chunk: int = CHUNK_FRAMES,
                 overlap: int = OVERLAP_FRAMES, window: int = WINDOW_FRAMES, halo: int = HALO_FRAMES,
                 cancel: CancelToken | None = None,
                 on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``decode_chunks`` run to its end (tests, benchmarks, ``khala decode``); ``on_chunk(done, total)``."""
    stage = decode_chunks(decoder, codes, chunk=chunk, overlap=overlap, window=window, halo=halo, cancel=cancel)
    return drain(stage, None if on_chunk is None else (lambda ev: on_chunk(ev.done, ev.total)))


def decode_coarse(decoder: DacDecoder, coarse: torch.Tensor, *, start: int = 0, stop: int | None = None,
                  halo: int = HALO_FRAMES, window: int = WINDOW_FRAMES,
                  cancel: CancelToken | None = None) -> torch.Tensor:
    """Rough preview (SPEC §12): (q0, q1) codes [A, 2] → float32 CPU audio [2, (stop - start) · hop] of
    frames start..stop-1 (stop defaults to A), from the latent of codebooks 0 and 1 alone.

    Decoded ``window`` frames at a time, each with up to ``halo`` frames of context on either side
    that exist in ``coarse`` (halo ≥ the decoder's receptive field, see ``decode_span``), so the
    samples equal those of one call on all A frames. ``cancel`` is checked before every window;
    NonFiniteError when a window's output holds NaN or inf."""
    frames = coarse.shape[0]
    stop = frames if stop is None else stop
    if not 0 <= start < stop <= frames:
        raise ValueError(f"need 0 <= start < stop <= {frames}; got start={start}, stop={stop}")
    hop, device = decoder.config.hop, decoder.codebooks.device
    parts = []
    with torch.inference_mode():
        for a in range(start, stop, window):
            if cancel is not None:
                cancel.check()
            b = min(a + window, stop)
            lo, hi = max(0, a - halo), min(frames, b + halo)
            codes = coarse[lo:hi].T.to(device=device, dtype=torch.long).unsqueeze(0)  # [1, 2, hi - lo]
            y = _finite(decoder.decoder(decoder.embed(codes)), lo, hi)[0]
            parts.append(y[:, (a - lo) * hop:(b - lo) * hop].to("cpu", torch.float32))
    return torch.cat(parts, dim=-1)
