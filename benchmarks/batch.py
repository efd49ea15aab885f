"""(i) Batched variations (issue 12): the backbone stage of N variations decoded as one batch, against
N = 1, with the same tokens per variation (the benchmark model never samples EOS).

Config keys: hidden, layers, heads, groups, variations, new_tokens, prompt, threads (default: torch's;
1 makes the run immune to another process descheduling the second thread on shared cores). Times the whole stage
(prefill + decode, through engine.stages.backbone.BackboneRun, each row with its own generator);
median over repeats, after one short warm-up run.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import emit, median, parser, peak_rss, setup, sync, torch_dtype
from benchmarks.models import random_transformer, transformer_config


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    c = setup(args)
    if c.get("threads"):
        torch.set_num_threads(c["threads"])
    from engine.events import CancelToken, drain
    from engine.stages.backbone import BackboneRun

    cfg = transformer_config("backbone", c.get("hidden", 256), c.get("layers", 4), c.get("heads", 8),
                             c.get("groups", 2))
    model = random_transformer(cfg, args.device, torch_dtype(args.dtype))
    prompt = list(range(1000, 1000 + c.get("prompt", 64)))
    rows, new = c.get("variations", 1), c.get("new_tokens", 2048)
    gen_device = args.device if args.device != "cpu" else "cpu"

    def stage(tokens: int, seed: int) -> float:
        run = BackboneRun(model, prompt, generators=[torch.Generator(device=gen_device).manual_seed(seed + i)
                                                     for i in range(rows)],
                          max_new_tokens=tokens, temperature=1.0, top_k=80)
        sync(args.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            results = drain(run.steps(CancelToken()))
        sync(args.device)
        if any(r.hit_eos or r.generated != tokens for r in results):
            raise SystemExit("a row ended early: the benchmark needs the same tokens per variation")
        return time.perf_counter() - t0

    stage(32, 0)  # warm-up: allocator, kernels
    times = [stage(new, 100 * r) for r in range(1, args.repeats + 1)]
    emit({"bench": "batch", "device": args.device, "dtype": args.dtype, "variations": rows, "new_tokens": new,
          "hidden": cfg.hidden_size, "threads": torch.get_num_threads(), "layers": cfg.num_layers, "stage_s": median(times), "runs_s": times,
          "ms_per_token_per_row": 1e3 * median(times) / new, "peak_rss": peak_rss()})


if __name__ == "__main__":
    main()
