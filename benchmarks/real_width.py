"""(e) Real width (SPEC §3 / §8), stage by stage, for memory, on CPU.

Config keys: stage ("backbone" | "superres"), minutes (2), prompt (300),
layers_run (super-res: run the pass through this many of the 24 layers — per-layer
activations are freed before the next layer, so the memory peak is the same as the
full pass; only the time is scaled), decode_steps (16).

(Model loads at real width: benchmarks/load_peak.py.)
* backbone: engine.stages.backbone.generate_audio_tokens with the KV cache the pipeline
  allocates (prompt + 23 552 positions), prefill + ``decode_steps`` tokens, then cancelled.
  The cache is written once (fill_) right after allocation: on CPU the OS commits zeroed
  pages lazily, while MPS and CUDA commit the whole buffer at once.
* superres: one pass at S = prompt + the 2-minute frames.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import current_rss, emit, parser, peak_rss, reset_peak, setup, torch_dtype
from benchmarks.models import REAL, random_transformer, transformer_config


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    c = setup(args)
    from engine.memory import estimate_peak_bytes, expected_frames
    from engine.request import SongRequest
    dtype = torch_dtype(args.dtype)
    stage, minutes, P = c["stage"], c.get("minutes", 2), c.get("prompt", 300)
    request = SongRequest(tags="pop", instrumental=True, minutes=minutes)
    frames = expected_frames(minutes)
    kind = "superres" if stage == "superres" else "backbone"
    cfg = transformer_config(kind, **REAL)
    est = estimate_peak_bytes(request, device=args.device, dtype=args.dtype, prompt_tokens=P, frames=frames)
    res = {"bench": "real_width", "config": c, "device": args.device, "dtype": args.dtype, "stage": stage,
           "rss_start": current_rss(), "frames": frames, "threads": torch.get_num_threads(),
           "estimate_stage": getattr(est, kind).run + est.overhead,
           "estimate_load": getattr(est, kind).weights + getattr(est, kind).load + est.overhead, "estimate_weights": getattr(est, kind).weights}
    model = random_transformer(cfg, args.device, dtype)
    res["rss_loaded"] = current_rss()
    if stage == "backbone":
        from engine.stages.backbone import generate_audio_tokens
        from engine.errors import Cancelled
        from engine.events import CancelToken
        steps = c.get("decode_steps", 16)
        new_cache = model.new_cache

        def touched_cache(batch: int, max_len: int):
            cache = new_cache(batch, max_len)
            cache.k.fill_(0)
            cache.v.fill_(0)
            res["cache_bytes"] = 2 * cache.k.numel() * cache.k.element_size()
            res["cache_positions"] = max_len
            return cache
        model.new_cache = touched_cache
        cancel, stamps = CancelToken(), []

        def on_token(n: int, _cap: int) -> None:
            stamps.append((n, time.perf_counter()))
            if n >= steps:
                cancel.cancel()
        reset_peak()
        t = time.perf_counter()
        try:
            with torch.inference_mode():
                generate_audio_tokens(model, list(range(1000, 1000 + P)), max_new_tokens=23552, temperature=1.0,
                                      top_k=80, generator=torch.Generator().manual_seed(0), cancel=cancel,
                                      on_token=on_token)
        except Cancelled:
            pass
        res.update(stage_peak=peak_rss(), seconds=time.perf_counter() - t,
                   decode_s_per_token=(stamps[-1][1] - stamps[0][1]) / max(1, stamps[-1][0] - stamps[0][0]))
    else:
        from benchmarks.superres_pass import superres_tokens
        from engine.model.sampling import sample_top_k
        S, idx, k = P + frames, 32, c.get("layers_run", 2)
        tokens = superres_tokens(S, P, idx, args.device)
        all_layers = model.layers
        model.layers = torch.nn.ModuleList(list(all_layers)[:k])  # all 24 stay resident in all_layers
        base = 128256 + 1024 * idx
        reset_peak()
        t = time.perf_counter()
        with torch.inference_mode():
            h = model.hidden(tokens[:, :, :idx], 0, causal=False)
            sample_top_k(model.logits_slice(h[:, P:S], base, base + 1024), 10, 1.0, torch.Generator())
        sec = time.perf_counter() - t
        res.update(stage_peak=peak_rss(), S=S, layers_run=k, seconds=sec, est_full_pass_s=sec * len(all_layers) / k)
    emit(res)


if __name__ == "__main__":
    main()
