"""How close each stage runs to this machine's own limits, at real width (SPEC §3), float32.

    python -m benchmarks.run ceiling        # one fresh process per stage
    python -m benchmarks.ceiling --config '{"stage": "backbone"}'

Every repeat measures the machine's ceilings right before its piece of the stage, so each
fraction compares numbers taken seconds apart (other users' load drifts; both feel it):
* memory bandwidth: ``dst.copy_(src)`` of 512 MiB float32 (bytes read + written per second),
  and a read-only stream (``src.sum()``), best of 3;
* matmul FLOP/s: a 4096 × 4096 × 4096 float32 matmul, best of 2.
Reported: the median fraction over the repeats and the best (the least disturbed). Config key
"threads" (default: torch's) sets the threads for the ceilings and the stage alike: on a shared
machine one thread is the steadier measure (a parallel region waits for its slowest thread).

Stages (config "stage"):
* "backbone": decode steps through ``Transformer.hidden`` + the slot's 1025 lm_head rows + top-k
  sample, as engine.stages.backbone does, at cache position ``position`` (default 1024; the cache is
  filled with random K/V, no prefill); bytes per token = every weight read once (layers, final
  norm, one embedding row, 1025 lm_head rows) + the K/V read; compared with the copy bandwidth;
* "superres": one pass (``layers_run`` of the 24 layers, default 2, scaled) at S = prompt + the
  2-minute frames; FLOPs = 2·params·S for the projections and MLP + 4·S²·N·d for attention +
  the 1024-row logits; compared with the matmul FLOP/s;
* "decoder": engine.stages.codec.decode_span on ``frames`` frames; FLOPs of every convolution,
  counted by forward hooks from their shapes (2·C_in·C_out·k·L_out / groups).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.common import emit, parser, setup
from benchmarks.models import REAL, random_decoder, random_transformer, transformer_config


def bandwidth() -> dict[str, float]:
    n = 128 << 20  # 512 MiB of float32
    src, dst = torch.rand(n), torch.empty(n)
    dst.copy_(src)
    copy, read = [], []
    for _ in range(3):
        t = time.perf_counter()
        dst.copy_(src)
        copy.append(2 * 4 * n / (time.perf_counter() - t))
        t = time.perf_counter()
        src.sum()
        read.append(4 * n / (time.perf_counter() - t))
    return {"copy_Bps": max(copy), "read_Bps": max(read)}


def matmul_flops() -> float:
    n = 4096
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    best = 0.0
    for _ in range(2):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def ceilings() -> dict[str, float]:
    return {**bandwidth(), "matmul_flops": matmul_flops()}


def layer_params(cfg: Any) -> int:
    H, N, G, d, F = cfg.hidden_size, cfg.num_heads, cfg.num_kv_groups, cfg.head_dim, cfg.ffn_hidden_size
    return H * N * d + N * d + 2 * (H * G * d + G * d) + N * d * H + H + 2 * (H * F + F) + F * H + H + 2 * H


def backbone(c: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    from engine.model.sampling import sample_top_k
    cfg = transformer_config("backbone", **REAL)
    model = random_transformer(cfg, "cpu", torch.float32)
    P, steps = c.get("position", 1024), c.get("steps", 6)
    cache = model.new_cache(1, P + steps * repeats + 2)
    cache.k.normal_()
    cache.v.normal_()
    cache.advance(P)
    W = model.lm_head.weight
    rows = W[128256:128256 + 1025]  # a slot's 1025 rows (as the engine gathers them once)
    gen = torch.Generator().manual_seed(0)
    tok = torch.tensor([[128300]])
    H = cfg.hidden_size
    weights = (cfg.num_layers * layer_params(cfg) + H + H + 1025 * H) * 4
    out, pos = [], P
    with torch.inference_mode():
        model.hidden(tok, pos, cache=cache)  # warm-up
        pos += 1
        for _ in range(repeats):
            ceil = ceilings()
            times = []
            for _ in range(steps):
                t = time.perf_counter()
                h = model.hidden(tok, pos, cache=cache)[:, -1]
                logits = torch.nn.functional.linear(h, rows).float()
                tok = (sample_top_k(logits, 80, 1.0, gen) + 128256).view(1, 1)
                times.append(time.perf_counter() - t)
                pos += 1
            kv = 2 * cfg.num_layers * cfg.num_kv_groups * cfg.head_dim * (pos - steps // 2) * 4
            s = sorted(times)[len(times) // 2]
            out.append({"ceiling": ceil, "s_per_token": s, "times": times, "bytes_per_token": weights + kv,
                        "weight_bytes": weights, "kv_bytes": kv, "achieved_Bps": (weights + kv) / s,
                        "fraction": (weights + kv) / s / ceil["copy_Bps"],
                        "fraction_of_read": (weights + kv) / s / ceil["read_Bps"]})
    return out


def superres(c: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    from benchmarks.superres_pass import superres_tokens
    from engine.memory import expected_frames
    from engine.model.sampling import sample_top_k
    cfg = transformer_config("superres", **REAL)
    k = c.get("layers_run", 2)
    cfg_k = transformer_config("superres", **{**REAL, "layers": k})  # only the layers that run are built
    model = random_transformer(cfg_k, "cpu", torch.float32)
    P, idx = c.get("prompt", 300), c.get("idx", 32)
    S = P + expected_frames(c.get("minutes", 2))
    tokens = superres_tokens(S, P, idx, "cpu")
    base = 128256 + 1024 * idx
    N, d, H = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    mm = 2 * S * (layer_params(cfg) - (N * d + 2 * cfg.num_kv_groups * d + H + 2 * cfg.ffn_hidden_size + H + 2 * H))
    attn = 4 * S * S * N * d
    flops = k * (mm + attn) + 2 * (S - P) * 1024 * H
    out = []
    with torch.inference_mode():
        for _ in range(repeats):
            ceil = ceilings()
            t = time.perf_counter()
            h = model.hidden(tokens[:, :, :idx], 0, causal=False)
            sample_top_k(model.logits_slice(h[:, P:S], base, base + 1024), 10, 1.0, torch.Generator())
            s = time.perf_counter() - t
            out.append({"ceiling": ceil, "S": S, "layers_run": k, "s_per_pass_run": s, "flops_run": flops,
                        "attention_share": attn / (mm + attn), "achieved_flops": flops / s,
                        "est_full_pass_s": s * cfg.num_layers / k, "fraction": flops / s / ceil["matmul_flops"]})
    return out


def decoder(c: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    from engine.stages.codec import decode_span
    dec = random_decoder(c.get("n_filters", 192), "cpu", torch.float32)
    frames = c.get("frames", 48)
    codes = torch.randint(0, 1024, (1, 64, frames), generator=torch.Generator().manual_seed(0))
    count = [0]

    def hook(m: torch.nn.Module, inp: Any, out: torch.Tensor) -> None:
        w = m.weight
        c_in = w.shape[0] if isinstance(m, torch.nn.ConvTranspose1d) else w.shape[1] * m.groups
        c_out = w.shape[1] * m.groups if isinstance(m, torch.nn.ConvTranspose1d) else w.shape[0]
        if isinstance(m, torch.nn.ConvTranspose1d):  # every input sample meets every tap
            count[0] += 2 * c_in * c_out * w.shape[-1] * inp[0].shape[-1] // m.groups
        else:
            count[0] += 2 * c_in * c_out * w.shape[-1] * out.shape[-1] // m.groups
    for m in dec.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            m.register_forward_hook(hook)
    out = []
    with torch.inference_mode():
        z = dec.embed(codes)
        decode_span(dec, z)  # warm-up (the convolution backend prepares its weights once)
        for _ in range(repeats):
            ceil = ceilings()
            count[0] = 0
            t = time.perf_counter()
            decode_span(dec, z)
            s = time.perf_counter() - t
            out.append({"ceiling": ceil, "frames": frames, "s": s, "flops": count[0], "achieved_flops": count[0] / s,
                        "fraction": count[0] / s / ceil["matmul_flops"]})
    return out


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    c = setup(args)
    if c.get("threads"):  # one thread: immune to another user's process descheduling the second
        torch.set_num_threads(c["threads"])
    runs = {"backbone": backbone, "superres": superres, "decoder": decoder}[c["stage"]](c, args.repeats)
    fr = sorted(r["fraction"] for r in runs)
    emit({"bench": "ceiling", "config": c, "device": "cpu", "dtype": "float32", "threads": torch.get_num_threads(),
          "runs": runs, "fraction_median": fr[len(fr) // 2], "fraction_best": fr[-1]})


if __name__ == "__main__":
    main()
