"""Our engine against a port-style baseline (benchmarks/port_baseline.py), CPU, reduced width.

    nice -n 5 python -m benchmarks.vs_port run [--repeats 5]   # every configuration, fresh processes
    python -m benchmarks.vs_port report                         # JSON → vs_port-cpu.md + .png

One configuration per process (``--config JSON``), as benchmarks.run:
* part "decode": backbone decode ms/token around position ``pos`` (prompt of pos−52 tokens,
  96 tokens decoded, timed every 8 tokens after the first 8; median step), impl "ours"
  (engine.stages.backbone.generate_audio_tokens), "port", or "port_subvocab" (every port cost but
  the whole-vocab logits);
* part "superres": one pass (hidden + 1024-row logits + top-10 sample) at S, idx 32, impl
  "ours" (Transformer.hidden) or "port"; time and the resident high-water mark.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch

from benchmarks.common import current_rss, emit, parser, peak_rss, reset_peak, setup, torch_dtype
from benchmarks.models import random_transformer, transformer_config

WIDTH = {"hidden": 512, "layers": 8, "heads": 8, "groups": 2}
POSITIONS = (256, 1024, 2048, 4096)
SIZES = (1024, 2048, 2648, 4096)  # 2648 = 2584 frames (2 minutes) + a 64-token prompt
TOKENS_2MIN, PROMPT, PASSES, S_2MIN = 5168, 64, 62, 2648
WINDOW, STEP = 96, 8  # tokens decoded per run; timed every STEP tokens after the first STEP


def _decode(c: dict[str, Any], repeats: int, dtype: torch.dtype) -> dict[str, Any]:
    from benchmarks.port_baseline import port_generate
    from engine.stages.backbone import generate_audio_tokens
    from engine.events import CancelToken
    model = random_transformer(transformer_config("backbone", **WIDTH), "cpu", dtype)

    def run(prompt: list[int], new: int, seed: int, on_token: Any = None) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            if c["impl"] == "ours":
                r = generate_audio_tokens(model, prompt, max_new_tokens=new, temperature=1.0, top_k=80,
                                          generator=gen, cancel=CancelToken(), on_token=on_token)
                assert not r.hit_eos
            else:
                out = port_generate(model, prompt, max_new_tokens=new, temperature=1.0, top_k=80, generator=gen,
                                    on_token=on_token, full_vocab=c["impl"] == "port")
                assert len(out) == new

    run(list(range(1000, 1016)), 16, 0)  # warm-up, not counted
    prompt = list(range(1000, 1000 + c["pos"] - (STEP + WINDOW) // 2))  # timed span centred on pos
    per_run = []
    for r in range(repeats):
        stamps: list[float] = []
        run(prompt, WINDOW, r + 1, lambda n, cap: stamps.append(time.perf_counter()))
        steps = sorted((b - a) / STEP for a, b in zip(stamps, stamps[1:]))
        per_run.append(1000 * steps[len(steps) // 2])
    return {"ms_per_token": sorted(per_run)[len(per_run) // 2], "runs_ms": per_run}


def _superres(c: dict[str, Any], repeats: int, dtype: torch.dtype) -> dict[str, Any]:
    from benchmarks.port_baseline import port_superres_pass
    from benchmarks.superres_pass import superres_tokens
    from engine.model.sampling import sample_top_k
    model = random_transformer(transformer_config("superres", **WIDTH), "cpu", dtype)
    S, T, idx = c["S"], PROMPT, 32
    tokens = superres_tokens(S, T, idx, "cpu")
    gen = torch.Generator().manual_seed(0)
    base = 128256 + 1024 * idx

    def one_pass() -> None:
        with torch.inference_mode():
            if c["impl"] == "ours":
                h = model.hidden(tokens[:, :, :idx], 0, causal=False, block_size=1024)
                sample_top_k(model.logits_slice(h[:, T:S], base, base + 1024), 10, 1.0, gen)
            else:
                port_superres_pass(model, tokens, idx, T, top_k=10, generator=gen, block=1024)

    before = current_rss()
    reset_peak()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t)
    peak = peak_rss()
    return {"seconds": sorted(times)[len(times) // 2], "times": times, "rss_before": before,
            "stage_peak": peak, "pass_growth": peak - before}


def worker(argv: list[str]) -> None:
    args = parser(__doc__).parse_args(argv)
    c = setup(args)
    res = (_decode if c["part"] == "decode" else _superres)(c, args.repeats, torch_dtype(args.dtype))
    emit({"bench": "vs_port", "config": c, "device": args.device, "dtype": args.dtype, "repeats": args.repeats,
          "width": WIDTH, "threads": torch.get_num_threads(), "nice": os.nice(0), **res})


def configs() -> list[dict[str, Any]]:
    """Ours and the baseline alternate, so drifting load from other users hits both alike."""
    dec = [{"part": "decode", "pos": p, "impl": i} for p in POSITIONS for i in ("ours", "port", "port_subvocab")]
    sr = [{"part": "superres", "S": s, "impl": i} for s in SIZES for i in ("ours", "port")]
    return dec + sr


def run_all(repeats: int) -> None:
    from benchmarks.run import RESULTS, run_one
    t0, load0 = time.perf_counter(), os.getloadavg()
    out = [run_one("vs_port", c, "cpu", "float32", repeats, 900) for c in configs()]
    meta = {"meta": True, "wall_s": time.perf_counter() - t0, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
            "nproc": os.cpu_count(), "torch": torch.__version__}
    (RESULTS / "vs_port-cpu.json").write_text(json.dumps(out + [meta], indent=1))


# ---- report -----------------------------------------------------------------------------------

def _interp(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise linear through (xs, ys), extended linearly past both ends."""
    i = min(max(1, sum(1 for v in xs if v <= x)), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _fit_quadratic(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares y = a·x + b·x² (pass time: linear layers + attention) through all points."""
    A = torch.tensor([[x, x * x] for x in xs], dtype=torch.float64)
    a, b = torch.linalg.lstsq(A, torch.tensor(ys, dtype=torch.float64).view(-1, 1)).solution.view(-1).tolist()
    return a, b


def _weights(cfg: Any) -> tuple[int, int]:
    """(lm_head parameters, parameters of all layers) for a config: the share of whole-vocab logits."""
    H, F_, N, G, d = cfg.hidden_size, cfg.ffn_hidden_size, cfg.num_heads, cfg.num_kv_groups, cfg.head_dim
    return cfg.padded_vocab_size * H, cfg.num_layers * (2 * H * N * d + 2 * H * G * d + 3 * H * F_)


def _cell(r: dict[str, Any]) -> str:
    return f"{r['ms_per_token']:.1f} ({min(r['runs_ms']):.1f}–{max(r['runs_ms']):.1f})"


def report() -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.models import REAL
    from benchmarks.run import RESULTS
    rs = json.loads((RESULTS / "vs_port-cpu.json").read_text())
    meta = next(r for r in rs if r.get("meta"))
    dec = {(r["config"]["impl"], r["config"]["pos"]): r for r in rs if r.get("config", {}).get("part") == "decode"}
    sr = {(r["config"]["impl"], r["config"]["S"]): r for r in rs if r.get("config", {}).get("part") == "superres"}
    pos = sorted({p for _, p in dec})
    ms = {i: [dec[i, p]["ms_per_token"] for p in pos] for i in ("ours", "port", "port_subvocab")}
    sizes = sorted({s for _, s in sr})
    sec = {i: [sr[i, s]["seconds"] for s in sizes] for i in ("ours", "port")}
    grow = {i: [sr[i, s]["pass_growth"] / 2**20 for s in sizes] for i in ("ours", "port")}
    peak = {i: [sr[i, s]["stage_peak"] / 2**30 for s in sizes] for i in ("ours", "port")}
    loads = [r["loadavg_1min"] for r in rs if not r.get("meta")]
    reps = rs[0]["repeats"]

    def table(head: list[str], rows: list[list[str]]) -> str:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(r) + " |" for r in rows])

    # (c) 2-minute-equivalent projection: backbone integrated over positions, 62 passes at S_2MIN
    back = {i: sum(_interp(pos, ms[i], p) for p in range(PROMPT, PROMPT + TOKENS_2MIN)) / 1000 for i in ms}
    fit = {i: _fit_quadratic(sizes, sec[i]) for i in sec}  # less sensitive to one noisy configuration
    sup = {i: PASSES * (fit[i][0] * S_2MIN + fit[i][1] * S_2MIN ** 2) for i in sec}
    total = {"ours": back["ours"] + sup["ours"], "port": back["port"] + sup["port"],
             "port_subvocab": back["port_subvocab"] + sup["port"]}
    # the same projection from each configuration's best (least disturbed) repeat
    best_ms = {i: [min(dec[i, p]["runs_ms"]) for p in pos] for i in ms}
    best_fit = {i: _fit_quadratic(sizes, [min(sr[i, s]["times"]) for s in sizes]) for i in sec}
    best = {i: sum(_interp(pos, best_ms[i], p) for p in range(PROMPT, PROMPT + TOKENS_2MIN)) / 1000
            + PASSES * (best_fit[i][0] * S_2MIN + best_fit[i][1] * S_2MIN ** 2) for i in sec}
    head_w, layer_w = _weights(transformer_config("backbone", **WIDTH))
    real_head, real_layers = _weights(transformer_config("backbone", REAL["hidden"], REAL["layers"], REAL["heads"],
                                                         REAL["groups"], ffn=REAL["ffn"]))
    md = [
        "# Our engine vs a port-style baseline (CPU, reduced width)", "",
        f"CPU float32, hidden {WIDTH['hidden']} × {WIDTH['layers']} layers, {WIDTH['heads']} heads / "
        f"{WIDTH['groups']} KV groups, head dim 64, real vocab; {rs[0]['threads']} threads on {meta['nproc']} shared "
        f"cores, `nice -n 5`, torch {meta['torch']}. Each configuration in a fresh process, median of {reps} "
        f"repeats. Load average (1 min) {min(loads):.1f}–{max(loads):.1f} during the runs (start "
        f"{meta['loadavg_start'][0]:.1f}, end {meta['loadavg_end'][0]:.1f}); whole run {meta['wall_s'] / 60:.1f} min.",
        "",
        "The baseline (`benchmarks/port_baseline.py`) runs the same `Transformer` weights and gives the same "
        "tokens and hidden states (`tests/test_port_baseline.py`); it differs only in strategy, as the Mac port: "
        "KV cache grown by `torch.cat` and re-expanded per head (`repeat_interleave`) every step, whole-vocab "
        "logits every step, a host sync (`.item()`) per token; super-res with the [S, C, H] embedding tensor, "
        "K/V expanded per head and re-cast to float32 for every 1024-query block (a forced copy here: in float32 "
        "the cast would be free, in the port's fp16 it is a real conversion).",
        "",
        "**Not a Mac measurement.** On MPS the ratios will differ: a host sync stalls the GPU queue and a "
        "growing cache churns the caching allocator (SPEC §9: ~73 GB at 7k tokens), both far dearer there "
        "than on a CPU, where the model's own arithmetic dominates.", "",
        "## (a) Backbone decode, ms/token against position", "",
        table(["position", "ours", "port-style", "ratio", "port-style without whole-vocab logits", "ratio"],
              [[str(p), _cell(dec["ours", p]), _cell(dec["port", p]), f"{b / a:.2f}×",
                _cell(dec["port_subvocab", p]), f"{c / a:.2f}×"]
               for p, a, b, c in zip(pos, ms["ours"], ms["port"], ms["port_subvocab"])]), "",
        "Median ms/token (min–max over the repeats: the spread is other users' load on the shared cores).", "",
        f"At this width the whole-vocab lm_head ({head_w / 1e6:.0f} M parameters) is {head_w / layer_w:.1f}× "
        f"the weights of all layers ({layer_w / 1e6:.0f} M), so computing it every token dominates the "
        f"port-style cost; at the real width it is {real_head / real_layers:.2f}× ({real_head / 1e9:.2f} B vs "
        f"{real_layers / 1e9:.2f} B). The last column (every port cost but that one) is the fairer guide "
        "to the real width.", "",
        "## (b) One super-res pass (idx 32, 64 text rows)", "",
        table(["S", "ours s", "port-style s", "ratio", "ours growth MB", "port-style growth MB",
               "ours peak GB", "port-style peak GB"],
              [[str(s), f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}×", f"{ga:.0f}", f"{gb:.0f}", f"{pa:.2f}", f"{pb:.2f}"]
               for s, a, b, ga, gb, pa, pb in zip(sizes, sec["ours"], sec["port"], grow["ours"], grow["port"],
                                                  peak["ours"], peak["port"])]), "",
        "Growth = the pass's resident high-water mark minus the resident memory before it (weights, token "
        "table and runtime excluded); peak includes everything resident. Growth can read low where the C "
        "allocator reuses pages freed before the pass (still resident), so the peak is the sturdier figure.", "",
        f"## (c) 2-minute-equivalent projection ({TOKENS_2MIN} backbone tokens, {PASSES} passes at S = {S_2MIN})", "",
        table(["", "backbone decode s", "super-res s", "total s", "port-style / ours"],
              [["ours", f"{back['ours']:.0f}", f"{sup['ours']:.0f}", f"{total['ours']:.0f}", "1"],
               ["port-style", f"{back['port']:.0f}", f"{sup['port']:.0f}", f"{total['port']:.0f}",
                f"**{total['port'] / total['ours']:.2f}×**"],
               ["port-style without whole-vocab logits", f"{back['port_subvocab']:.0f}", f"{sup['port']:.0f}",
                f"{total['port_subvocab']:.0f}", f"{total['port_subvocab'] / total['ours']:.2f}×"]]), "",
        f"From each configuration's best repeat instead of the median: ours {best['ours']:.0f} s, port-style "
        f"{best['port']:.0f} s, **{best['port'] / best['ours']:.2f}×**.", "",
        f"Backbone: ms/token interpolated linearly between the measured positions (extended linearly past "
        f"{pos[-1]}) and summed over positions {PROMPT}…{PROMPT + TOKENS_2MIN - 1}. Super-res: {PASSES} × the "
        f"pass time at S = {S_2MIN} from a least-squares fit a·S + b·S² through the four measured medians "
        f"(ours {sup['ours'] / PASSES:.2f} s, port-style {sup['port'] / PASSES:.2f} s; measured there "
        f"{sr['ours', S_2MIN]['seconds']:.2f} s and {sr['port', S_2MIN]['seconds']:.2f} s), idx 32 (the middle "
        "pass; the embedding's cost grows with idx in both). "
        "Not included: the prompt prefill, model loads and the DAC decoder (the same work in both). "
        "Reduced width on CPU: the ratios say which strategy does less work, not how long a Mac takes.", "",
        "Plot: `vs_port-cpu.png`.", ""]
    (RESULTS / "vs_port-cpu.md").write_text("\n".join(md))

    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for i, style, lab in (("ours", "o-", "ours (static cache)"), ("port", "s-", "port-style"),
                          ("port_subvocab", "^--", "port-style, without whole-vocab logits")):
        ax[0].plot(pos, ms[i], style, label=lab)
    ax[0].set(xlabel="position", ylabel="ms per token (median)", title="Backbone decode", ylim=(0, None))
    for i, style, lab in (("ours", "o-", "ours"), ("port", "s-", "port-style")):
        ax[1].plot(sizes, sec[i], style, label=lab)
        ax[2].plot(sizes, grow[i], style, label=lab)
    ax[1].set(xlabel="S (tokens)", ylabel="seconds per pass (median)", title="Super-res pass time", ylim=(0, None))
    ax[2].set(xlabel="S (tokens)", ylabel="MB over resident", title="Super-res pass memory growth", ylim=(0, None))
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"Ours vs port-style, CPU float32, hidden {WIDTH['hidden']} × {WIDTH['layers']} layers "
                 f"(load {min(loads):.1f}–{max(loads):.1f} on {meta['nproc']} shared cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "vs_port-cpu.png", dpi=100)
    print("\n".join(md))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "run":
        run_all(int(sys.argv[sys.argv.index("--repeats") + 1]) if "--repeats" in sys.argv else 5)
        report()
    elif cmd == "report":
        report()
    else:
        worker(sys.argv[1:])
