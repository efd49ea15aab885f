"""Rough previews while the backbone writes (SPEC §12): the DAC decoder on codebooks 0 and 1 only.

``Previewer`` turns the backbone's growing (q0, q1) codes into ``Preview`` events:

* **Exact seams.** A piece of frames [a, b) is decoded with HALO_FRAMES of context on each
  side, and during the run only frames that already have their right-hand context are kept,
  so every sample equals what one decoder call on the whole song's coarse codes gives
  (``decode_coarse`` on all frames); nothing already sent is ever rewritten.
* **Bounded cost.** Decoding takes at most ``budget`` of the stage's time so far: the cost of
  a piece is predicted from the decoder's measured seconds per frame (a short warm-up decode
  gives the first figure), a piece is cut to what the budget allows, and nothing is decoded
  while that is under ``every`` seconds of audio. So the backbone keeps ≥ 1 - budget of its
  token rate (benchmarks/preview.py measures it). What the budget held back is decoded by
  ``final`` at the end of the stage, so the last preview is the whole rough song.
* **No copies per event.** Audio goes into one growing frames-major buffer; each Preview's
  ``audio`` is a read-only [2, n] view of it (``audio.T`` is a contiguous [n, 2] block, what
  a player wants), so a consumer can keep every event without the engine copying the song.
* **Never the song's problem.** A preview decode that gives NaN/inf turns previews off with
  one warning; the song itself is untouched (the decode stage has its own safe-dtype rerun).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import numpy as np
import torch

from engine.errors import NonFiniteError
from engine.events import CancelToken, Event, Log, Preview
from engine.request import SAMPLE_RATE, SAMPLES_PER_FRAME
from engine.stages.codec import HALO_FRAMES, decode_coarse

FRAMES_PER_SECOND = SAMPLE_RATE / SAMPLES_PER_FRAME
PREVIEW_BUDGET = 0.12  # share of the backbone stage's time previews may take (issue 15 asks ≥ 85 % token rate)
WARMUP_FRAMES = 32  # the first seconds-per-frame figure comes from a decode this long (zeros)
WARMUP_MARGIN = 1.5  # until a real piece is timed, its cost is assumed this much above the warm-up's
# Frames per decoder call of a preview: a sixth of the song decode's window (codec.WINDOW_FRAMES = 384),
# so the decoder kept beside the backbone needs ~0.5 GB of activations at real width, not ~3 GB;
# the halo's extra work (2 × 16 of every 64 + 32 frames decoded) is a preview's to pay.
PREVIEW_WINDOW_FRAMES = 64


def piece_frames(ready: int, allowance_s: float, seconds_per_frame: float, min_piece: int, budget: float,
                 halo: int = HALO_FRAMES, window: int = PREVIEW_WINDOW_FRAMES) -> int:
    """How many of the ``ready`` frames to decode now: all of them if the budget allows, else as many
    as it does; 0 when that is fewer than ``min_piece``.

    ``allowance_s`` = budget × elapsed − spent. n frames are decoded in ⌈n / window⌉ windows, each
    with ``halo`` frames of context per side, costing s · (n + 2·halo·⌈n / window⌉) seconds; the
    elapsed time grows by as much, so spent + cost ≤ budget × (elapsed + cost) allows
    n + 2·halo·⌈n / window⌉ ≤ allowance / ((1 − budget) · s). ``budget`` ≥ 1 means no limit.
    """
    if ready < min_piece or allowance_s <= 0:
        return 0
    if budget >= 1.0:
        return ready
    frames_worth = allowance_s / ((1.0 - budget) * max(seconds_per_frame, 1e-9))
    best, windows = 0, 1
    while (windows - 1) * window < ready:
        n = min(ready, windows * window, int(frames_worth) - 2 * halo * windows)
        if n > (windows - 1) * window:
            best = n
        windows += 1
    return best if best >= min_piece else 0


class Previewer:
    """Previews of variation 0's coarse codes [A, 2] (frames, (q0, q1)), every ``every_s`` seconds of
    new audio at most; ``capacity_frames`` sizes the first buffer (it grows if the song is longer)."""

    def __init__(self, decoder: Any, every_s: float, *, capacity_frames: int, budget: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.decoder, self.clock = decoder, clock
        self.budget = PREVIEW_BUDGET if budget is None else budget  # ≥ 1: no limit
        self.hop = decoder.config.hop
        self.min_piece = max(1, round(every_s * FRAMES_PER_SECOND))
        self.frames = 0  # frames decoded and sent
        self.spent = 0.0  # seconds spent on previews in this stage
        self.started = clock()
        self.seconds_per_frame = 0.0
        self._decoded = (0.0, 0)  # decode seconds and frames decoded (context included), real pieces only
        self._buffer = np.zeros((max(capacity_frames, 1) * self.hop, 2), dtype=np.float32)
        self.enabled = True

    def warm_up(self) -> Iterator[Event]:
        """One short decode, before the stage starts: the first seconds-per-frame figure (an
        overestimate, as it includes first-call set-up), so the first piece already fits the budget."""
        start = self.clock()
        try:
            decode_coarse(self.decoder, torch.zeros(WARMUP_FRAMES, 2, dtype=torch.long), window=PREVIEW_WINDOW_FRAMES)
        except NonFiniteError as error:
            yield self._off(error)
        self.seconds_per_frame = WARMUP_MARGIN * (self.clock() - start) / WARMUP_FRAMES

    def start(self) -> None:
        """The stage starts now: the budget counts from here."""
        self.started = self.clock()

    def maybe(self, frames_bound: int, coarse: Callable[[], torch.Tensor],
              cancel: CancelToken | None = None) -> Iterator[Event]:
        """After a backbone check: a Preview if enough new frames have their right-hand context and the
        budget allows. ``frames_bound`` ≥ the frames written (so ``coarse()``, which copies them from
        the device, is called only when a preview may follow)."""
        if not self.enabled:
            return
        allowance = self.budget * (self.clock() - self.started) - self.spent
        if not self._affordable(frames_bound - HALO_FRAMES - self.frames, allowance):
            return
        begin = self.clock()
        codes = coarse()
        n = self._affordable(codes.shape[0] - HALO_FRAMES - self.frames, allowance)
        if n:
            yield from self._piece(codes, self.frames + n, cancel)
        self.spent += self.clock() - begin

    def _affordable(self, ready: int, allowance: float) -> int:
        return piece_frames(ready, allowance, self.seconds_per_frame, self.min_piece, self.budget)

    def final(self, coarse: torch.Tensor, cancel: CancelToken | None = None) -> Iterator[Event]:
        """At the end of the stage: whatever the budget held back, in pieces of at least ``every_s``
        (a Preview after each), the last one ending at the song's last frame."""
        total = coarse.shape[0]
        step = max(self.min_piece, PREVIEW_WINDOW_FRAMES)
        while self.enabled and self.frames < total:
            begin = self.clock()
            stop = total if total - self.frames <= step + self.min_piece else self.frames + step
            yield from self._piece(coarse, stop, cancel)
            self.spent += self.clock() - begin

    def _piece(self, coarse: torch.Tensor, stop: int, cancel: CancelToken | None) -> Iterator[Event]:
        start = self.frames
        t0 = self.clock()
        try:
            audio = decode_coarse(self.decoder, coarse, start=start, stop=stop, cancel=cancel,
                                  window=PREVIEW_WINDOW_FRAMES)
        except NonFiniteError as error:
            yield self._off(error)
            return
        seconds, frames = self._decoded
        windows = -(-(stop - start) // PREVIEW_WINDOW_FRAMES)
        self._decoded = (seconds + self.clock() - t0, frames + (stop - start) + 2 * HALO_FRAMES * windows)
        self.seconds_per_frame = self._decoded[0] / self._decoded[1]
        self._write(start, audio.numpy())
        self.frames = stop
        yield Preview(self.audio(), SAMPLE_RATE, stop)

    def _off(self, error: NonFiniteError) -> Log:
        self.enabled = False
        return Log(f"Rough previews turned off for this song: {error} The song itself is not affected.", "warning")

    def _write(self, start: int, audio: np.ndarray) -> None:
        """audio [2, n] into the buffer from frame ``start``; a full buffer is replaced by one twice as
        big (views already handed out keep the old one, whose samples they cover are final)."""
        end = start * self.hop + audio.shape[1]
        if end > self._buffer.shape[0]:
            bigger = np.zeros((max(end, 2 * self._buffer.shape[0]), 2), dtype=np.float32)
            bigger[:start * self.hop] = self._buffer[:start * self.hop]
            self._buffer = bigger
        self._buffer[start * self.hop:end] = audio.T

    def audio(self) -> np.ndarray:
        """The preview so far: a read-only float32 [2, frames · hop] view (its ``.T`` is contiguous)."""
        view = self._buffer[:self.frames * self.hop].T
        view.flags.writeable = False
        return view
