"""Sub-window decoding of one chunk equals the whole-chunk pass once the halo covers the
decoder's receptive field: max |diff| / max |y| against the halo, on the engine's tiny
random decoder (real rates, so the same receptive field in frames as the real one).

    python -m benchmarks.decoder_halo   → results/decoder_halo.md
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.decoder_bench import decode_windowed
from benchmarks.run import RESULTS


def main() -> None:
    from engine.stages.codec import load_decoder
    from engine.testing.tiny_decoder import write_tiny_decoder
    folder = Path(tempfile.mkdtemp(prefix="khala-halo-"))
    write_tiny_decoder(folder, seed=3)
    dec = load_decoder(folder / "decoder_weights.pt", folder / "decoder_config.yaml", "cpu", torch.float32)
    codes = torch.randint(0, 1024, (1, 64, 600), generator=torch.Generator().manual_seed(0))
    rows = ["| halo (frames) | max abs diff / max abs output |", "|---|---|"]
    with torch.inference_mode():
        z = dec.embed(codes)
        full = dec.decoder(z)
        for halo in (0, 4, 8, 12, 16, 32):
            y = decode_windowed(dec, z, 120, halo)
            rows.append(f"| {halo} | {float((y - full).abs().max() / full.abs().max()):.1e} |")
    text = ("# Decoder sub-windows vs the whole chunk\n\n600-frame chunk, 120-frame sub-windows, float32, "
            "tiny random decoder with the real rates [8, 8, 8, 4]:\n\n" + "\n".join(rows) + "\n")
    (RESULTS / "decoder_halo.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
