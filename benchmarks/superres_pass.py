"""(b) One super-res pass (the body of engine.stages.superres.expand_codes: bidirectional
model.hidden over columns 0..idx-1, 1024-row float32 logits of the audio rows, top-10
sample) against sequence length S = text + frames.

Config keys: hidden, layers, heads, groups, ffn, S, text, idx. Reports the median pass
time and the stage peak: the resident-memory high-water mark during the pass (weights,
token table and runtime included; the peak is reset just before the pass), plus the
pass's own growth over the resident memory before it.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import (device_peak, device_reset_peak, emit, parser, peak_rss, current_rss,
                               reset_peak, setup, sync, torch_dtype)
from benchmarks.models import random_transformer, transformer_config


def superres_tokens(S: int, text: int, idx: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    tokens = torch.full((1, S, 64), -1, dtype=torch.long)
    tokens[0, :text, 0] = torch.randint(0, 128000, (text,), generator=g)
    offsets = 128256 + 1024 * torch.arange(64)
    tokens[0, text:, :idx] = torch.randint(0, 1024, (S - text, idx), generator=g) + offsets[:idx]
    tokens[0, text - 1, 0] = 128255 - idx
    return tokens.to(device)


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    c = setup(args)
    from engine.model.sampling import sample_top_k
    cfg = transformer_config("superres", c.get("hidden", 512), c.get("layers", 8), c.get("heads", 8),
                             c.get("groups", 2), ffn=c.get("ffn"))
    model = random_transformer(cfg, args.device, torch_dtype(args.dtype))
    S, T, idx = c["S"], c.get("text", 64), c.get("idx", 32)
    tokens = superres_tokens(S, T, idx, args.device)
    gen = torch.Generator().manual_seed(0)
    base = 128256 + 1024 * idx

    def one_pass() -> torch.Tensor:
        with torch.inference_mode():
            h = model.hidden(tokens[:, :, :idx], 0, causal=False, block_size=c.get("block", 1024))
            logits = model.logits_slice(h[:, T:S], base, base + 1024)
            return sample_top_k(logits, 10, 1.0, gen)

    sync(args.device)
    before = current_rss()
    reset_peak()
    device_reset_peak(args.device)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        one_pass()
        sync(args.device)
        times.append(time.perf_counter() - t)
    stage_peak = peak_rss()
    emit({"bench": "superres_pass", "config": c, "device": args.device, "dtype": args.dtype, "S": S,
          "seconds": sorted(times)[len(times) // 2], "times": times, "rss_before": before,
          "stage_peak": stage_peak, "pass_growth": stage_peak - before, "device_peak": device_peak(args.device),
          "full_scores_bytes": cfg.num_heads * S * S * 4, "params": sum(p.numel() for p in model.parameters()),
          "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
