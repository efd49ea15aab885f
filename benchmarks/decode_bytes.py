"""Bytes moved per backbone decode token at real width, before and after decode attention
read the KV cache as stored (issue 12). Analytic, from shapes; no model is run.

    python -m benchmarks.decode_bytes            # writes results/decode_bytes.md and .json

Per token, one layer reads its K and V for every cached position (2 · G · d elements per
position) and its weights once; attention also writes and reads a float32 score block of
N scores per position. Bytes per element touched, by who touches them:

* before: K/V read in the model dtype (2 B), written as a float32 copy (4 B), read back by the
  two matmuls (4 B); scores: matmul writes 4, then the in-place softmax (amax 4, sub+exp 16,
  sum 4, div 8) and P·V reads 4 → 40 B per score;
* after, CUDA ("native"): K/V read as stored (2 B); scores written as float32 (4), softmax
  reads 4 and writes 4, the stored-dtype copy of P reads 4 and writes 2, P·V reads 2 → 20 B;
* after, MPS ("stored"): K/V 2 B; scores written in fp16 (2), softmax reads 2, writes 4,
  copy reads 4 writes 2, P·V reads 2 → 16 B;
* after, CPU ("chunked"): K/V read once from memory (2 B); the float32 slice (4 MiB) is
  written and read within the last-level cache, not counted; scores 4 + 8 + 4 = 16 B.

Weights per token: every layer's weights, the final norm, one embedding row and the 1025
lm_head rows of the slot (EOS + 1024 codes), in the model dtype.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.memory import REAL_BACKBONE, TransformerShape

RESULTS = Path(__file__).parent / "results"
POSITIONS = (1024, 10240, 20480)
KV_BYTES = {"before": 2 + 4 + 4, "after (CUDA)": 2, "after (MPS)": 2, "after (CPU)": 2}
SCORE_BYTES = {"before": 40, "after (CUDA)": 20, "after (MPS)": 16, "after (CPU)": 16}


def weight_bytes(s: TransformerShape, b: int) -> int:
    H, N, G, d, F = s.hidden, s.heads, s.groups, s.head_dim, s.ffn
    attn = H * N * d + N * d + 2 * (H * G * d + G * d) + N * d * H + H
    mlp = 2 * (H * F + F) + F * H + H
    return (s.layers * (attn + mlp + 2 * H) + H + H + 1025 * H) * b


def per_token(s: TransformerShape, b: int, position: int, how: str) -> dict[str, int]:
    kv = 2 * s.layers * s.groups * s.head_dim * position
    scores = s.layers * s.heads * position
    return {"weights": weight_bytes(s, b), "kv": kv * KV_BYTES[how] * b // 2, "scores": scores * SCORE_BYTES[how]}


def main() -> None:
    s, b = REAL_BACKBONE, 2
    rows, out = [], []
    for pos in POSITIONS:
        before = per_token(s, b, pos, "before")
        for how in KV_BYTES:
            t = per_token(s, b, pos, how)
            total = sum(t.values())
            out.append({"position": pos, "how": how, **t, "total": total})
            rows.append(f"| {pos:,} | {how} | {t['weights'] / 1e9:.2f} | {t['kv'] / 1e9:.2f} | "
                        f"{t['scores'] / 1e9:.2f} | **{total / 1e9:.2f}** | {total / sum(before.values()):.2f} |")
    md = ["# Bytes moved per backbone decode token, real width, fp16 (analytic)", "",
          f"hidden {s.hidden}, {s.layers} layers, {s.heads} heads / {s.groups} KV groups × {s.head_dim}, "
          "fp16 weights and cache, one sequence. GB = 10⁹ bytes read + written. How each element is "
          "counted: `benchmarks/decode_bytes.py`.", "",
          "| position | attention | weights GB | K/V GB | scores GB | total GB | / before |", "|---|---|---|---|---|---|---|",
          *rows, "",
          "Before: every decode step converted each layer's whole K and V to float32 (`k.float()`), "
          f"so at {POSITIONS[-1]:,} positions the cache traffic ({out[-4]['kv'] / 1e9:.1f} GB) exceeded the "
          f"weights' ({out[-4]['weights'] / 1e9:.2f} GB: the layers, plus 1025 of the lm_head's rows). After: K/V "
          "are read once, as stored; the float32 score block (N scores per position) is the only "
          "float32 tensor that grows with the position.", ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decode_bytes.md").write_text("\n".join(md))
    (RESULTS / "decode_bytes.json").write_text(json.dumps(out, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
