"""Tables (benchmarks/results/RESULTS.md) and plots (PNG) from the collected JSON results.

    python -m benchmarks.report [--device cpu]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.run import RESULTS  # noqa: E402

GB, MB = 1024**3, 1024**2


def load(name: str, device: str) -> list[dict[str, Any]] | None:
    p = RESULTS / f"{name}-{device}.json"
    return json.loads(p.read_text()) if p.exists() else None


def table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def backbone(rs: list[dict[str, Any]], device: str) -> str:
    r = rs[0]
    pos, ms = r["positions"], r["ms_per_token"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(pos, ms, "o-", label=f"median of {r.get('repeats', 2)} runs")
    if "ms_per_token_min" in r:
        ax.plot(pos, r["ms_per_token_min"], "s--", label="best run (least disturbed by other load)")
    ax.legend(fontsize=8)
    ax.set(xlabel="position (prompt + generated)", ylabel="ms per token (median)", ylim=(0, max(ms) * 1.3),
           title=f"Backbone decode, static KV cache ({device}, {r['dtype']}, reduced width)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / f"backbone_decode-{device}.png", dpi=100)
    c = r["config"]
    mins = r.get("ms_per_token_min", ms)
    rows = [[p, f"{m:.1f}", f"{b:.1f}", f"{1000 / m:.1f}"] for p, m, b in zip(pos, ms, mins)][:: max(1, len(pos) // 8)]
    first, last = ms[0], sorted(ms[-3:])[1]
    return (f"### (a) Backbone decode against position\n\nhidden {c.get('hidden', 512)}, {c.get('layers', 8)} "
            f"layers, real vocab; {r['dtype']} on {device}, {r['threads']} threads, median of "
            f"{r.get('repeats', 2)} runs in one fresh process; load average {r['loadavg_1min']:.1f} on 2 shared cores.\n\n"
            + table(["position", "ms/token (median)", "ms/token (best run)", "tokens/s (median)"], rows)
            + f"\n\nOverall {r['tokens_per_s_overall']:.1f} tokens/s; last/first window cost ratio "
              f"{last / first:.2f} (flat = 1). Plot: `backbone_decode-{device}.png`.\n")


def superres(rs: list[dict[str, Any]], device: str) -> str:
    from benchmarks.models import transformer_config
    from engine.memory import estimate_peak_bytes
    from engine.request import SongRequest
    S = [r["S"] for r in rs]
    rows, est = [], []
    for r in rs:
        c = r["config"]
        cfg = transformer_config("superres", c.get("hidden", 512), c.get("layers", 8), c.get("heads", 8),
                                 c.get("groups", 2))
        e = estimate_peak_bytes(SongRequest(tags="x", instrumental=True), device=device, dtype=r["dtype"],
                                superres_cfg=cfg, prompt_tokens=c.get("text", 64),
                                frames=r["S"] - c.get("text", 64))
        est.append(e.superres.run + e.overhead)
        rows.append([r["S"], f"{r['seconds']:.2f}", f"{r['stage_peak'] / MB:.0f}", f"{r['pass_growth'] / MB:.0f}",
                     f"{r['full_scores_bytes'] / MB:.0f}", f"{est[-1] / MB:.0f}",
                     f"{est[-1] / r['stage_peak']:.2f}"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(S, [r["seconds"] for r in rs], "o-")
    a1.set(xlabel="S (tokens)", ylabel="seconds per pass", title="Super-res pass time")
    a2.plot(S, [r["pass_growth"] / MB for r in rs], "o-", label="measured: pass growth over resident")
    a2.plot(S, [r["full_scores_bytes"] / MB for r in rs], "s--", label="one full S×S score matrix (all heads)")
    a2.set(xlabel="S (tokens)", ylabel="MB", title="Super-res pass memory")
    a2.legend(fontsize=8)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / f"superres_pass-{device}.png", dpi=100)
    r0 = rs[0]
    return ("### (b) Super-res pass against sequence length\n\n"
            f"hidden {r0['config'].get('hidden', 512)}, {r0['config'].get('layers', 8)} layers, real vocab "
            f"({r0['params'] / 1e6:.0f} M params), {r0['dtype']}, {device}; stage peak = VmHWM during the pass "
            "(weights, token table and runtime included); growth = stage peak − RSS before the pass.\n\n"
            + table(["S", "s/pass", "stage peak MB", "pass growth MB", "full S×S scores MB", "estimate MB",
                     "estimate/measured"], rows)
            + f"\n\nPlot: `superres_pass-{device}.png`.\n")


def decoder(rtf: list[dict[str, Any]] | None, mem: list[dict[str, Any]] | None, device: str) -> str:
    out = ["### (c) DAC decoder"]
    if rtf:
        rows = [[r["config"]["n_filters"], r["frames"], f"{r['audio_s']:.1f}", f"{r['seconds']:.1f}",
                 f"{r['rtf']:.2f}", f"{r['stage_peak'] / MB:.0f}"] for r in rtf]
        out += ["", "Real-time factor (decode seconds / audio seconds; < 1 is faster than real time), "
                f"{rtf[0]['dtype']}, {device}:", "",
                table(["n_filters", "frames", "audio s", "decode s", "RTF", "stage peak MB"], rows)]
    if mem:
        real = [r for r in mem if r["config"]["n_filters"] == 192 and r["frames"] >= 64 and not r["config"].get("sub")]  # past the fixed early peak
        rows = [[r["config"]["n_filters"], r["frames"],
                 f"{r['config']['sub']} + 2×{r['config'].get('halo', 32)}" if r["config"].get("sub") else "-", f"{r['seconds']:.1f}",
                 f"{r['pass_growth'] / MB:.0f}", f"{r['stage_peak'] / MB:.0f}",
                 f"{r['max_abs_diff_vs_whole'] / r['max_abs_output']:.1e}" if "max_abs_output" in r else "-",
                 f"{r['live_activations']:.1f}"] for r in mem]
        out += ["", "One chunk through the decoder (growth = chunk peak − resident before):", "",
                table(["n_filters", "chunk frames", "sub-window", "s", "growth MB", "stage peak MB",
                       "max |diff| / max |y| vs whole chunk", "live activations"], rows),
                "", "live activations = growth / one [n_filters, chunk·2048] activation. Below ~64 frames at real "
                "width the peak is a fixed ~0.3 GB (the 3072→1536 transposed conv's weights reordered by the "
                "CPU convolution backend), not the chunk."]
        if len(real) >= 2:
            real.sort(key=lambda r: r["frames"])
            per_act = 192 * 2048 * 4  # bytes of one [192, samples] fp32 activation per frame
            ks = [r["pass_growth"] / (per_act * r["frames"]) for r in real]
            k_last = ks[-1]
            full = k_last * per_act * 1920
            out += ["", f"Real width (192 filters), fp32: live activations {min(ks):.1f}–{max(ks):.1f} over "
                    f"{real[0]['frames']}–{real[-1]['frames']}-frame chunks ({k_last:.1f} at the longest). A 1920-frame "
                    f"chunk at {k_last:.1f} → **{full / GB:.1f} GB** of working memory in fp32, **≈ {full / 2 / GB:.1f} GB "
                    f"in fp16/bf16** (range {min(ks) * per_act * 1920 / 2 / GB:.1f}–{max(ks) * per_act * 1920 / 2 / GB:.1f} GB)."]
            xs, ys = [r["frames"] for r in real], [r["pass_growth"] for r in real]
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.plot(xs, [y / GB for y in ys], "o", label="measured growth, one chunk")
            ax.plot([0, 1920], [0, full / GB], "--", label=f"{k_last:.1f} activations × frames (extrapolation)")
            ax.axvline(1920, color="grey", lw=0.8)
            ax.set(xlabel="chunk frames", ylabel="GB", title="DAC decoder chunk memory, real width, fp32")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(RESULTS / f"decoder_memory-{device}.png", dpi=100)
            out += ["", f"Plot: `decoder_memory-{device}.png`."]
    return "\n".join(out) + "\n"


def e2e_estimate(r: dict[str, Any], device: str) -> tuple[dict[str, int], int]:
    from benchmarks.models import decoder_config, transformer_config
    from engine.memory import estimate_peak_bytes
    from engine.request import SongRequest
    c, t = r["config"], r["tokens"]
    cfg = {k: transformer_config(k, c.get("hidden", 256), c.get("layers", 4), c.get("heads", 4), c.get("groups", 2))
           for k in ("backbone", "superres")}
    req = SongRequest(tags="x", instrumental=True, minutes=c.get("minutes", 2),
                      max_tokens=c.get("max_tokens", 2 * 1292 * c.get("minutes", 2)))
    e = estimate_peak_bytes(req, device=device, dtype=r["dtype"], backbone_cfg=cfg["backbone"],
                            superres_cfg=cfg["superres"], decoder_cfg=decoder_config(c.get("n_filters", 24)),
                            prompt_tokens=t["backbone_prompt"], superres_prompt_tokens=t["superres_prompt"],
                            frames=t["audio_frames"])
    out = {}
    for k, st in e.stages.items():
        out[k] = st.run + e.overhead
        out["load_" + k] = st.weights + st.load + e.overhead
    return out, e.peak


def e2e(rs: list[dict[str, Any]], device: str) -> str:
    r = rs[0]
    r["estimate"], r["estimate_peak"] = e2e_estimate(r, device)
    order = ["start", "load_backbone", "backbone", "load_superres", "superres", "load_decoder", "decode", "write"]
    est_of = {"load_backbone": "load_backbone", "backbone": "backbone", "load_superres": "load_superres",
              "superres": "superres", "load_decoder": "load_decoder", "decode": "decoder"}
    rows = []
    for k in order:
        if k in r["stages"]:
            s = r["stages"][k]
            e = r["estimate"].get(est_of.get(k, ""), None)
            rows.append([k, f"{s['seconds']:.1f}", f"{s['peak'] / MB:.0f}", f"{e / MB:.0f}" if e else "-",
                         f"{e / s['peak']:.2f}" if e else "-"])
    c, t = r["config"], r["tokens"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [k for k in order if k in r["stages"]]
    ax.bar(names, [r["stages"][k]["peak"] / MB for k in names])
    ax.set(ylabel="peak RSS MB", title=f"End to end, 2-minute-equivalent song ({device}, reduced width)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(RESULTS / f"end_to_end-{device}.png", dpi=100)
    return ("### (d) End to end, 2-minute-equivalent song (reduced width)\n\n"
            f"engine.pipeline.Pipeline from files; hidden {c.get('hidden', 256)}, {c.get('layers', 4)} layers, "
            f"decoder n_filters {c.get('n_filters', 24)}; {r['dtype']}, {device}. Prompt {t['backbone_prompt']} "
            f"tokens, {t['generated']} tokens → {t['audio_frames']} frames = {r['song_seconds']:.1f} s of audio. "
            "Peak = VmHWM reset at each Stage event (one process).\n\n"
            + table(["stage", "seconds", "peak MB", "estimate MB", "estimate/measured"], rows)
            + f"\n\nMeasured peak {r['measured_peak'] / MB:.0f} MB, estimated {r['estimate_peak'] / MB:.0f} MB "
              f"(ratio {r['estimate_peak'] / r['measured_peak']:.2f}). Plot: `end_to_end-{device}.png`.\n")


def real(rs: list[dict[str, Any]], device: str) -> str:
    from engine.memory import estimate_peak_bytes, expected_frames
    from engine.request import SongRequest
    rows = []
    for r in rs:
        c = r["config"]
        e = estimate_peak_bytes(SongRequest(tags="pop", instrumental=True, minutes=c.get("minutes", 2)),
                                device=device, dtype=r["dtype"], prompt_tokens=c.get("prompt", 300),
                                frames=expected_frames(c.get("minutes", 2)))
        st = e.superres if r["stage"] == "superres" else e.backbone
        r["estimate_stage"], r["estimate_weights"] = st.run + e.overhead, st.weights
        r["estimate_load"] = st.weights + st.load + e.overhead
        extra = (f"cache {r['cache_bytes'] / GB:.2f} GB for {r['cache_positions']} positions; "
                 f"{r['decode_s_per_token']:.2f} s/token" if r["stage"] == "backbone" else
                 f"S={r['S']}, {r['layers_run']} of 24 layers run; full pass ≈ {r['est_full_pass_s']:.0f} s")
        rows.append([r["stage"], r["dtype"], f"{r['rss_loaded'] / GB:.2f}", f"{r['stage_peak'] / GB:.2f}",
                     f"{r['estimate_stage'] / GB:.2f} ({r['estimate_stage'] / r['stage_peak']:.2f}×)", extra])
    return ("### (e) Real width (SPEC §3), stage by stage, for memory\n\n"
            + table(["stage", "dtype", "resident GB", "peak GB", "estimate GB", "notes"], rows) + "\n")


def load_peak(rs: list[dict[str, Any]]) -> str:
    rows = [[r["config"]["kind"], r["dtype"], "engine (plain reads, 16 MiB slices)" if r["config"]["loader"] == "engine"
             else "before (mapped file)", f"{r['peak'] / GB:.2f}", f"{r['weights'] / GB:.2f}",
             f"{(r['peak'] - r['weights'] - r['rss_start']) / GB:.2f}",
             f"{r['estimate'] / GB:.2f} ({r['estimate'] / r['peak']:.2f}×)" if r["config"]["loader"] == "engine" else "-",
             f"{r['load_s']:.1f}"] for r in rs]
    return ("### (f) Model load at real width (bf16 file, CPU), whole process\n\n"
            "Fresh process per row (benchmarks/load_peak.py); peak = VmHWM of the whole process, runtime "
            f"({rs[0]['rss_start'] / GB:.2f} GB after imports) included; transient = peak − weights − that.\n\n"
            + table(["model", "to", "loader", "peak GB", "weights GB", "transient GB", "estimate GB", "load s"], rows)
            + "\n")


def ceiling(rs: list[dict[str, Any]]) -> str:
    rows = []
    for res in rs:
        runs = sorted(res["runs"], key=lambda r: r["fraction"])
        r = runs[len(runs) // 2]  # the median repeat
        c = r["ceiling"]
        if res["config"]["stage"] == "backbone":
            what = f"backbone decode, position {res['config'].get('position', 1024):,}"
            work = (f"{r['bytes_per_token'] / 1e9:.2f} GB/token in {r['s_per_token'] * 1000:.0f} ms → "
                    f"{r['achieved_Bps'] / 1e9:.1f} GB/s")
            ceil = f"copy {c['copy_Bps'] / 1e9:.1f} GB/s (read-only {c['read_Bps'] / 1e9:.1f})"
        else:
            sup = res["config"]["stage"] == "superres"
            what = (f"super-res pass, S = {r['S']:,} ({r['layers_run']} of 24 layers run)" if sup
                    else f"decoder, {r['frames']} frames")
            sec, flops = (r["s_per_pass_run"], r["flops_run"]) if sup else (r["s"], r["flops"])
            work = f"{flops / 1e9:.0f} GFLOP in {sec:.1f} s → {r['achieved_flops'] / 1e9:.1f} GFLOP/s"
            ceil = f"matmul {c['matmul_flops'] / 1e9:.1f} GFLOP/s"
        rows.append([what, work, ceil, f"**{res['fraction_median']:.0%}**", f"{res['fraction_best']:.0%}",
                     f"{res['loadavg_1min']:.1f}"])
    return ("### (g) Close to the limit: real width, CPU float32\n\n"
            f"One fresh process per stage ({rs[0]['threads']} thread{'s' if rs[0]['threads'] > 1 else ''}), "
            f"{len(rs[0]['runs'])} repeats; before each "
            "repeat the process measures this machine's ceilings, so each fraction compares numbers taken seconds "
            "apart (benchmarks/ceiling.py). The columns show the median repeat; best = the least disturbed.\n\n"
            + table(["stage", "work (median repeat)", "ceiling (same repeat)", "fraction (median)", "best",
                     "load avg"], rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    d = p.parse_args(argv).device
    parts = ["# Benchmark results\n", "Generated by `python -m benchmarks.report`; see benchmarks/README.md.\n"]
    if (rs := load("backbone", d)):
        parts.append(backbone(rs, d))
    if (rs := load("superres", d)):
        parts.append(superres(rs, d))
    rtf, mem = load("decoder", d), ((load("decoder_mem", d) or []) + (load("decoder_real", d) or []) + (load("decoder_long", d) or [])
                                  + (load("decoder_fix", d) or []))
    if rtf or mem:
        parts.append(decoder(rtf, mem, d))
    if (rs := load("e2e", d)):
        parts.append(e2e(rs, d))
    if (rs := [r for r in (load("real", d) or []) if r["stage"] != "load"]):
        parts.append(real(rs, d))
    if (rs := load("real_load", d)):
        parts.append(load_peak(rs))
    if (rs := load("ceiling", d)):
        parts.append(ceiling(rs))
    if (rs := load("ceiling_1thread", d)):
        parts.append(ceiling(rs).replace("### (g) Close to the limit", "### (g') Close to the limit, one thread"))
    (RESULTS / f"RESULTS-{d}.md").write_text("\n".join(parts))
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
