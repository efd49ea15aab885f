"""engine.memory: the pre-flight memory estimate (torch-free), checked against a measured run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.memory import (GIB, REAL_BACKBONE, REAL_DECODER, REAL_SUPERRES, available_memory_bytes,
                           estimate_peak_bytes, expected_frames, memory_warning)
from engine.request import SongRequest

ROOT = Path(__file__).resolve().parents[1]


def req(minutes: int = 2, **kw) -> SongRequest:
    return SongRequest(tags="pop, piano", instrumental=True, minutes=minutes, **kw)


def test_importing_memory_does_not_import_torch() -> None:
    code = ("import sys, engine.memory as m; from engine.request import SongRequest; "
            "m.memory_warning(SongRequest(tags='x', instrumental=True), 'mps', 'float16'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_real_parameter_counts() -> None:
    assert 1.60e9 < REAL_BACKBONE.params < 1.63e9  # ≈ 1.6 B (SPEC §3)
    assert 1.86e9 < REAL_SUPERRES.params < 1.89e9  # bigger vocabulary
    assert 175e6 < REAL_DECODER.params - 64 * 1024 * 128 < 181e6  # 178 M decoder (SPEC §8) + codebooks


def test_grows_with_duration() -> None:
    peaks = [estimate_peak_bytes(req(m), device="mps", dtype="float16") for m in (1, 2, 4, 8, 10)]
    assert [e.frames for e in peaks] == [min(expected_frames(m), 23552 // 2) for m in (1, 2, 4, 8, 10)]
    sr = [e.superres.run for e in peaks]
    assert sr == sorted(sr) and len(set(sr)) == len(sr)  # S = prompt + frames grows
    dec = [e.decoder.run for e in peaks]
    assert dec == sorted(dec) and dec[0] < dec[-1]
    totals = [e.peak for e in peaks]
    assert totals == sorted(totals)


def test_monotone_in_dtype_size() -> None:
    half = estimate_peak_bytes(req(), device="cpu", dtype="float16")
    bf = estimate_peak_bytes(req(), device="cpu", dtype="bfloat16")
    full = estimate_peak_bytes(req(), device="cpu", dtype="float32")
    assert max(half.peak, bf.peak) < full.peak
    assert bf.peak == half.peak  # same bytes per weight; the loader reads either way (nothing stays mapped)
    for name in ("backbone", "superres"):  # the decoder runs in float32 whatever the dtype
        assert half.stages[name].weights * 2 == full.stages[name].weights
        assert half.stages[name].total < full.stages[name].total


def test_stage_structure_and_kv_cache_as_allocated() -> None:
    e = estimate_peak_bytes(req(), device="mps", dtype="float16", prompt_tokens=300)
    assert set(e.stages) == {"backbone", "superres", "decoder"}
    assert e.peak == e.overhead + max(s.total for s in e.stages.values())
    assert e.peak_stage in e.stages
    # the pipeline preallocates prompt + 23 552 positions: 24 layers × 8 groups × 64 × (k, v) × 2 bytes
    assert e.cache_positions == 300 + 23552
    assert e.backbone.state >= 2 * 24 * 8 * 64 * 2 * (300 + 23552)
    capped = estimate_peak_bytes(req(max_tokens=1000), device="mps", dtype="float16", prompt_tokens=300)
    assert capped.cache_positions == 1300 and capped.backbone.state < e.backbone.state
    assert capped.frames == 500  # frames never exceed what max_tokens can make


def test_superres_memory_is_linear_not_quadratic_in_length() -> None:
    w = [estimate_peak_bytes(req(), device="mps", dtype="float16", frames=f).superres.work for f in (4000, 8000)]
    assert w[1] < 2.2 * w[0]


def test_config_objects_are_accepted() -> None:
    from engine.model.config import ModelConfig
    cfg = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_groups=2, head_dim=16, ffn_hidden_size=96,
                      norm_eps=1e-6, rope_base=5e5, vocab_size=130304, padded_vocab_size=130432, max_positions=4096)
    small = estimate_peak_bytes(req(), device="cpu", dtype="float32", backbone_cfg=cfg)
    assert small.backbone.weights < estimate_peak_bytes(req(), device="cpu", dtype="float32").backbone.weights


def test_warning_only_when_short_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.memory as m
    monkeypatch.setattr(m, "available_memory_bytes", lambda device: 8 * GIB)
    text = memory_warning(req(10), "mps", "float16")
    assert text and "GB" in text and "\n" not in text
    monkeypatch.setattr(m, "available_memory_bytes", lambda device: 64 * GIB)
    assert memory_warning(req(10), "mps", "float16") is None
    monkeypatch.setattr(m, "available_memory_bytes", lambda device: None)
    assert memory_warning(req(10), "mps", "float16") is None


def test_available_memory_is_physical_memory() -> None:
    have = available_memory_bytes("cpu")
    assert have is None or have > 256 * 1024**2
    assert available_memory_bytes("mps") == have


def test_rejects_unknown_device_and_dtype() -> None:
    with pytest.raises(ValueError):
        estimate_peak_bytes(req(), device="tpu", dtype="float16")
    with pytest.raises(ValueError):
        estimate_peak_bytes(req(), device="cpu", dtype="int8")


def test_estimate_within_20_percent_of_a_measured_stage() -> None:
    """A super-res pass at a small width, measured in a fresh process (VmHWM), vs the estimate."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset the resident-memory peak")
    from benchmarks.models import transformer_config
    cfg = {"hidden": 512, "layers": 2, "heads": 8, "groups": 2, "S": 4096}
    out = subprocess.run([sys.executable, "-m", "benchmarks.superres_pass", "--config", json.dumps(cfg),
                          "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    measured = json.loads(line[7:])["stage_peak"]
    e = estimate_peak_bytes(req(), device="cpu", dtype="float32", prompt_tokens=64, frames=4096 - 64,
                            superres_cfg=transformer_config("superres", 512, 2, 8, 2))
    ratio = (e.superres.run + e.overhead) / measured  # model built in memory: no load transient
    assert 0.8 <= ratio <= 1.2, ratio


def test_estimate_follows_the_codec_window_and_float32_decoder(monkeypatch) -> None:
    import engine.stages.codec as codec
    import engine.memory as memory
    from engine.request import SongRequest
    import inspect

    import engine.model.attention as attention
    assert (memory.CODEC_WINDOW_FRAMES, memory.CODEC_HALO_FRAMES) == (codec.WINDOW_FRAMES, codec.HALO_FRAMES)
    assert memory.CHUNK_FRAMES == codec.CHUNK_FRAMES and memory.SCORE_BUDGET == attention.SCORE_BUDGET
    assert (memory.DECODE_QUERIES, memory.KEY_CHUNK) == (attention.DECODE_QUERIES, attention.KEY_CHUNK)
    assert memory.CPU_SCORE_BLOCK == attention.CPU_SCORE_BLOCK
    import engine.stages.preview as preview
    assert memory.PREVIEW_WINDOW_FRAMES == preview.PREVIEW_WINDOW_FRAMES
    import engine.model.loader as loader
    assert memory.READ_CHUNK_BYTES == loader.READ_CHUNK_BYTES
    assert memory.ATTN_BLOCK == inspect.signature(attention.attention).parameters["block_size"].default
    monkeypatch.delenv("KHALA_DECODER_DTYPE", raising=False)
    request = SongRequest(tags="Pop", instrumental=True, minutes=2)
    fp16 = memory.estimate_peak_bytes(request, device="mps", dtype="float16")
    fp32 = memory.estimate_peak_bytes(request, device="mps", dtype="float32")
    assert fp16.decoder == fp32.decoder  # the decoder's dtype does not follow the transformers'
    monkeypatch.setenv("KHALA_DECODER_DTYPE", "float16")
    assert memory.estimate_peak_bytes(request, device="mps", dtype="float16").decoder.weights * 2 == fp16.decoder.weights


def test_variations_multiply_what_runs_at_once() -> None:
    """N variations: the batched backbone holds N cache rows and N rows of activations; super-res
    runs one variation at a time unless batched; every song is held until the last is decoded."""
    one = estimate_peak_bytes(req(), device="mps", dtype="float16", prompt_tokens=300)
    assert one.variations == 1
    two = estimate_peak_bytes(req(), device="mps", dtype="float16", prompt_tokens=300, variations=2)
    cache = 2 * 24 * 8 * 64 * 2 * (300 + 23552)
    assert two.variations == 2 and two.backbone.weights == one.backbone.weights
    assert two.backbone.state - one.backbone.state >= cache  # a second cache row
    assert 1.9 * one.backbone.work < two.backbone.work <= 2 * one.backbone.work
    assert two.superres == one.superres
    song = 2 * one.frames * 2048 * 4
    assert two.decoder.state == one.decoder.state + song and two.decoder.work == one.decoder.work
    both = estimate_peak_bytes(req(), device="mps", dtype="float16", prompt_tokens=300, variations=2,
                               batched=("backbone", "superres"))
    assert both.superres.state == 2 * one.superres.state and both.superres.work > 1.9 * one.superres.work
    from_request = estimate_peak_bytes(req(variations=2), device="mps", dtype="float16", prompt_tokens=300)
    assert from_request == two
    assert estimate_peak_bytes(req(variations=2), device="mps", dtype="float16", prompt_tokens=300,
                               variations=1) == one


def test_decode_step_against_a_narrow_cache_counts_no_float32_copy() -> None:
    """At 23 852 positions a float32 copy of one layer's K and V would be 98 MB; a decode step
    against an fp16 cache now holds only a 4 MiB slice and the score block."""
    import engine.memory as memory
    s = REAL_BACKBONE
    work16 = memory.attention_work(1, 23852, s, 2, causal=True)
    work32 = memory.attention_work(1, 23852, s, 4, causal=True)
    assert 2 * 32 * 23852 * 4 + memory.KEY_CHUNK * 4 < work16 < 2 * 8 * 23852 * 64 * 4 / 8  # vs the old copy
    prefill16 = memory.attention_work(300, 300, s, 2, causal=True)
    assert prefill16 >= 2 * 8 * 300 * 64 * 4  # many queries: K/V still converted once per call
    assert work32 > 0


def test_previews_keep_the_decoder_beside_the_backbone() -> None:
    """With rough previews on, the backbone stage holds the decoder's weights and one preview window too."""
    from engine.memory import REAL_DECODER, estimate_peak_bytes
    from engine.request import SongRequest

    request = SongRequest(tags="Pop", instrumental=True, minutes=2)
    plain = estimate_peak_bytes(request, device="mps", dtype="float16")
    with_preview = estimate_peak_bytes(request, device="mps", dtype="float16", preview=True)
    grew = with_preview.backbone.run - plain.backbone.run
    assert grew >= REAL_DECODER.params * 4  # the float32 decoder's weights, at least
    assert with_preview.superres == plain.superres and with_preview.decoder == plain.decoder
