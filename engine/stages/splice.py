"""Decode a continued song so that its audio before the cut is the parent's, sample for sample (SPEC §12).

A continuation keeps the parent's first ``cut`` frames of codes. Decoding the new codes with
``decode_chunks`` gives, before the cut, the parent's audio only where both songs were
decoded the same way: the decoder's receptive field (about 11 frames, < HALO_FRAMES) reaches
back from the first new frame, and the chunk plan depends on the song's length — the
parent's last chunk ends at its end, so a longer song has a seam (a crossfade with a chunk
decoded without left context) and longer decoder windows where the parent had neither.
Outputs computed with the same chunk and window shapes from the same codes are identical
outside the receptive field (measured on CPU float32: convolutions are computed position by
position; a GPU's FFT or Winograd convolution may differ in the last bits).

So: decode the new song; find the first frame whose chunk differs between the two songs' plans
(``first_different_frame``); when that is before ``keep = cut - HALO_FRAMES``, decode the
parent's codes over just the chunks that make frames [that frame, keep) — the sub-plan from a
chunk start reproduces the parent's chunks, windows and crossfades exactly — and copy them in.
The result: frames [0, keep) are the parent's audio, frames [keep, end) the new decode, which
equals the parent's up to rounding until the receptive field of the first new frame.
"""

from __future__ import annotations

from typing import Generator

import torch

from engine.events import DECODE, CancelToken, Progress
from engine.stages.codec import (CHUNK_FRAMES, HALO_FRAMES, OVERLAP_FRAMES, WINDOW_FRAMES, DacDecoder,
                                 chunk_plan, decode_chunks)


def kept_frames(cut: int, halo: int = HALO_FRAMES) -> int:
    """Frames of a continuation whose audio is the parent's exactly: those before ``cut - halo``."""
    return max(0, cut - halo)


def first_different_frame(parent_frames: int, frames: int, chunk: int = CHUNK_FRAMES,
                          overlap: int = OVERLAP_FRAMES) -> int:
    """The first frame whose audio may come from differently shaped chunks in songs of ``parent_frames``
    and ``frames`` frames: the start of the first chunk that differs (its seam starts there)."""
    parent, new = chunk_plan(parent_frames, chunk, overlap), chunk_plan(frames, chunk, overlap)
    for a, b in zip(parent, new):
        if a != b:
            return a[0]
    return min(parent_frames, frames)


def parent_span(parent_frames: int, start: int, stop: int, chunk: int = CHUNK_FRAMES,
                overlap: int = OVERLAP_FRAMES) -> tuple[int, int]:
    """Codes [lo, hi) of the parent whose ``decode_chunks`` reproduces the parent's audio on frames
    [start, stop) (0 ≤ start < stop ≤ parent_frames): the parent's chunks that touch those frames.
    The first one's own seam with the chunk before ends at or before ``start``, no later chunk
    touches them, and chunk starts are multiples of the stride, so the sub-plan's chunks, windows
    and crossfades are the parent's, shifted by ``lo``."""
    touching = [(a, b) for a, b in chunk_plan(parent_frames, chunk, overlap) if a < stop and b > start]
    return touching[0][0], touching[-1][1]


def decode_continued(decoder: DacDecoder, codes: torch.Tensor, parent_codes: torch.Tensor, cut: int, *,
                     chunk: int = CHUNK_FRAMES, overlap: int = OVERLAP_FRAMES, window: int = WINDOW_FRAMES,
                     halo: int = HALO_FRAMES, cancel: CancelToken | None = None
                     ) -> Generator[Progress, None, torch.Tensor]:
    """The decode stage of a continuation: codes [64, T] (frames 0..cut-1 equal to ``parent_codes``
    [64, T_parent]) → float32 CPU audio [2, T·2048] whose frames before ``cut - halo`` are exactly
    the parent's ``decode_chunks`` audio. Yields Progress over every chunk decoded (the parent's
    re-decoded chunks included)."""
    if not 0 <= cut <= min(codes.shape[1], parent_codes.shape[1]):
        raise ValueError(f"cut {cut} outside the songs ({codes.shape[1]} and {parent_codes.shape[1]} frames)")
    frames, parent_frames = codes.shape[1], parent_codes.shape[1]
    keep = kept_frames(cut, halo)
    start = first_different_frame(parent_frames, frames, chunk, overlap)
    lo, hi = parent_span(parent_frames, start, keep, chunk, overlap) if start < keep else (0, 0)
    extra = len(chunk_plan(hi - lo, chunk, overlap))
    total = len(chunk_plan(frames, chunk, overlap)) + extra
    options = dict(chunk=chunk, overlap=overlap, window=window, halo=halo, cancel=cancel)
    audio = yield from _renumbered(decode_chunks(decoder, codes, **options), 0, total)
    if extra:
        hop = decoder.config.hop
        parent = yield from _renumbered(decode_chunks(decoder, parent_codes[:, lo:hi], **options), total - extra, total)
        audio[:, start * hop:keep * hop] = parent[:, (start - lo) * hop:(keep - lo) * hop]
    return audio


def _renumbered(stage: Generator[Progress, None, torch.Tensor], before: int,
                total: int) -> Generator[Progress, None, torch.Tensor]:
    while True:
        try:
            event = next(stage)
        except StopIteration as stop:
            return stop.value
        yield Progress(DECODE, before + event.done, total)
