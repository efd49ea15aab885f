"""(a) Backbone decode speed against position, through the engine's own loop
(engine.stages.backbone.generate_audio_tokens: static KV cache, EOS check every 8 tokens).

Config keys: hidden, layers, heads, groups, ffn, prompt, new_tokens, window.
Per-token time is taken from the loop's progress callback (every 8 tokens) and summarised
as the median over windows of ``window`` positions, then the median over repeats.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import emit, parser, peak_rss, setup, sync, torch_dtype
from benchmarks.models import random_transformer, transformer_config


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    c = setup(args)
    from engine.stages.backbone import generate_audio_tokens
    from engine.events import CancelToken
    cfg = transformer_config("backbone", c.get("hidden", 512), c.get("layers", 8), c.get("heads", 8),
                             c.get("groups", 2), ffn=c.get("ffn"))
    model = random_transformer(cfg, args.device, torch_dtype(args.dtype))
    prompt = list(range(1000, 1000 + c.get("prompt", 64)))
    new, window = c.get("new_tokens", 4032), c.get("window", 128)
    runs: list[list[float]] = []
    rates = []
    with torch.inference_mode():  # warm-up (allocator, kernels); not counted
        generate_audio_tokens(model, prompt, max_new_tokens=32, temperature=1.0, top_k=80,
                              generator=torch.Generator().manual_seed(0), cancel=CancelToken())
    for r in range(1, args.repeats + 1):
        stamps: list[tuple[int, float]] = []

        def on_token(n: int, _cap: int) -> None:
            sync(args.device)
            stamps.append((n, time.perf_counter()))
        gen = torch.Generator(device=args.device if args.device != "cpu" else "cpu").manual_seed(r)
        t0 = time.perf_counter()
        with torch.inference_mode():
            res = generate_audio_tokens(model, prompt, max_new_tokens=new, temperature=1.0, top_k=80,
                                        generator=gen, cancel=CancelToken(), on_token=on_token)
        total = time.perf_counter() - t0
        if res.hit_eos:
            raise SystemExit("EOS sampled: the benchmark model should never end")
        per: list[float] = []  # per-token seconds for each window
        for w0 in range(0, new, window):
            pts = [(n, t) for n, t in stamps if w0 <= n <= w0 + window]
            if len(pts) >= 2:
                steps = [(t2 - t1) / (n2 - n1) for (n1, t1), (n2, t2) in zip(pts, pts[1:])]
                per.append(sorted(steps)[len(steps) // 2])
        if r:
            runs.append(per)
            rates.append(res.generated / total)
    med = [sorted(col)[len(col) // 2] for col in zip(*runs)]
    best = [min(col) for col in zip(*runs)]
    positions = [len(prompt) + w0 + window // 2 for w0 in range(0, new, window)][:len(med)]
    emit({"bench": "backbone_decode", "config": c, "repeats": args.repeats, "device": args.device, "dtype": args.dtype,
          "positions": positions, "ms_per_token": [1000 * s for s in med],
          "ms_per_token_min": [1000 * s for s in best],
          "tokens_per_s_overall": sorted(rates)[len(rates) // 2], "peak_rss": peak_rss(),
          "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
