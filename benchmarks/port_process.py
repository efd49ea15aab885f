"""A whole song made the port-style way, as one process: the baseline `khala generate` is timed
against in benchmarks/vs_port_process.py.

    python -m benchmarks.port_process --weights DIR --max-tokens 2048 --seed 7 --out song.wav [--tags ...]

The same work as ``khala generate`` on the same weights folder: the engine's prompt, tokenizer and
DAC decoder, the same sampling; what differs is the port's strategy (benchmarks/port_baseline.py):
models loaded with safetensors' mapped ``get_tensor`` (benchmarks/loader_before.py), the backbone
with a cat-grown, per-head-expanded KV cache, whole-vocab logits and a host sync per token,
super-res with the [S, C, H] embedding and K/V re-cast per query block, logits for every row.
Each model is freed before the next loads, as the engine does.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

from benchmarks.loader_before import load_transformer_mapped
from benchmarks.port_baseline import port_generate, port_superres_pass
from engine.audio import write_audio
from engine.prompt.template import build_prompts
from engine.prompt.tokenizer import Tokenizer
from engine.request import SAMPLE_RATE, SongRequest
from engine.stages.backbone import pair_audio_tokens
from engine.stages.codec import decode_codes, load_decoder
from engine.stages.superres import AUDIO_BASE, CODEBOOK, NUM_Q, TASK_MARKER_BASE
from engine.weights.folder import locate_weights


def port_expand(model, text_ids: list[int], coarse: torch.Tensor, top_k: int, generator: torch.Generator) -> torch.Tensor:
    """coarse [A,2] → codes [64,A], 62 passes of port_superres_pass (logits for every row)."""
    T, A = len(text_ids), coarse.shape[0]
    S = T + A
    offsets = AUDIO_BASE + CODEBOOK * torch.arange(NUM_Q)
    tokens = torch.full((1, S, NUM_Q), -1, dtype=torch.long)
    tokens[0, :T, 0] = torch.tensor(text_ids)
    tokens[0, T:, :2] = coarse + offsets[:2]
    for idx in range(2, NUM_Q):
        tokens[0, T - 1, 0] = TASK_MARKER_BASE - idx
        tokens[0, T:, idx] = port_superres_pass(model, tokens, idx, T, top_k=top_k, generator=generator)[0, T:]
    return (tokens[0, T:] - offsets).T.contiguous()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--max-tokens", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tags", default="pop")
    p.add_argument("--lyrics", default="")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--codes-out", type=Path, default=None, help="the codes [64, frames] as .npy")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    request = SongRequest(tags=args.tags, lyrics=args.lyrics.replace("\\n", "\n"), instrumental=not args.lyrics,
                          seed=args.seed, max_tokens=args.max_tokens)
    paths = locate_weights(args.weights)
    prompts = build_prompts(request, Tokenizer.from_file(paths.tokenizer))
    timings = {}
    with torch.inference_mode():
        model = load_transformer_mapped(paths.backbone, paths.backbone_args, "cpu", torch.float32)
        t = time.perf_counter()
        tokens = port_generate(model, prompts.backbone_ids, max_new_tokens=args.max_tokens,
                               temperature=request.temperature, top_k=request.top_k,
                               generator=torch.Generator().manual_seed(args.seed))
        timings["backbone"] = time.perf_counter() - t
        del model
        gc.collect()
        pairs, _ = pair_audio_tokens(tokens)
        coarse = torch.tensor(pairs, dtype=torch.long).view(-1, 2)
        model = load_transformer_mapped(paths.superres, paths.superres_args, "cpu", torch.float32)
        t = time.perf_counter()
        codes = port_expand(model, prompts.superres_ids, coarse, request.top_k_superres,
                            torch.Generator().manual_seed(args.seed))
        timings["superres"] = time.perf_counter() - t
        del model
        gc.collect()
        decoder = load_decoder(paths.decoder, paths.decoder_config, "cpu", torch.float32)
        t = time.perf_counter()
        audio = decode_codes(decoder, codes).to(torch.float32).numpy()
        timings["decode"] = time.perf_counter() - t
    write_audio(args.out, audio, SAMPLE_RATE)
    if args.codes_out is not None:
        import numpy as np
        np.save(args.codes_out, codes.numpy())
    print(f"port_process: {coarse.shape[0]} frames, {audio.shape[-1] / SAMPLE_RATE:.1f} s of audio, "
          + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f", total {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
