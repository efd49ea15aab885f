"""(c) DAC decoder: real-time factor and per-chunk memory.

Config keys: n_filters (192 = real), frames, mode ("rtf": engine.stages.codec.decode_codes on a
song of ``frames`` frames; "mem": one chunk of ``frames`` through the convolutional
decoder), sub (optional: decode the chunk in sub-windows of ``sub`` frames with a halo of
``halo`` frames of context on each side, cropped — the fix proposed for the real width),
dtype (optional override).
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import current_rss, emit, parser, peak_rss, reset_peak, setup, sync, torch_dtype
from benchmarks.models import random_decoder

HOP = 2048
RATE = 44100


def decode_windowed(decoder, z: torch.Tensor, sub: int, halo: int) -> torch.Tensor:
    """z [1,D,n] → [1,2,n·2048], sub-window by sub-window; each window sees ``halo`` frames of
    real context on each side (cropped away), so the result equals one whole-chunk pass as
    long as ``halo`` covers the decoder's receptive field (~12 frames)."""
    n = z.shape[-1]
    out = torch.empty(z.shape[0], decoder.config.out_channel, n * HOP, dtype=z.dtype, device=z.device)
    for s0 in range(0, n, sub):
        s1 = min(n, s0 + sub)
        a, b = max(0, s0 - halo), min(n, s1 + halo)
        y = decoder.decoder(z[..., a:b])
        out[..., s0 * HOP:s1 * HOP] = y[..., (s0 - a) * HOP:(s1 - a) * HOP]
        del y
    return out


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    c = setup(args)
    dtype = c.get("dtype", args.dtype)
    from engine.stages.codec import decode_codes
    dec = random_decoder(c["n_filters"], args.device, torch_dtype(dtype))
    frames = c["frames"]
    codes = torch.randint(0, 1024, (64, frames), generator=torch.Generator().manual_seed(0)).to(args.device)
    result = {"bench": "decoder", "config": c, "device": args.device, "dtype": dtype, "frames": frames,
              "audio_s": frames * HOP / RATE, "threads": torch.get_num_threads(),
              "params": sum(p.numel() for p in dec.parameters()) + dec.codebooks.numel()}
    with torch.inference_mode():
        z = dec.embed(codes.unsqueeze(0))
        if c["mode"] == "rtf":
            times = []
            before = current_rss()
            reset_peak()
            for _ in range(args.repeats):
                sync(args.device)
                t = time.perf_counter()
                decode_codes(dec, codes)
                sync(args.device)
                times.append(time.perf_counter() - t)
            sec = sorted(times)[len(times) // 2]
            result.update(seconds=sec, times=times, rtf=sec / result["audio_s"], rss_before=before,
                          stage_peak=peak_rss())
        else:
            sub, halo = c.get("sub"), c.get("halo", 32)
            before = current_rss()
            reset_peak()
            t = time.perf_counter()
            y = decode_windowed(dec, z, sub, halo) if sub else dec.decoder(z)
            sync(args.device)
            result.update(seconds=time.perf_counter() - t, rss_before=before, stage_peak=peak_rss())
            act = dec.config.n_filters * frames * HOP * torch.tensor([], dtype=torch_dtype(dtype)).element_size()
            result.update(pass_growth=result["stage_peak"] - before, activation_bytes=act,
                          live_activations=(result["stage_peak"] - before) / act)
            if sub:  # same samples as one whole-chunk pass?
                full = dec.decoder(z)
                result["max_abs_diff_vs_whole"] = float((full - y).abs().max())
                result["max_abs_output"] = float(full.abs().max())
    emit(result)


if __name__ == "__main__":
    main()
