"""Real-width DAC decoder (SPEC §8, random weights, float32, CPU): peak memory of one decode.

    python -m benchmarks.decoder_windowed_real FRAMES WINDOW   # WINDOW 0 = whole chunk in one call

Run each configuration in a fresh process; prints the process's VmHWM before and after.
"""
import sys
import time

import torch

from engine.stages.codec import DacDecoder, decode_codes
from engine.stages.decoder_config import parse_decoder_config

def hwm() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"): return int(line.split()[1]) / 1024**2

frames = int(sys.argv[1]); window = int(sys.argv[2])
cfg = parse_decoder_config({"encoder": {"input_channel": 2, "n_filters": 128, "strides": [4, 8, 8, 8], "d_latent": 128},
                            "decoder": {"d_latent": 128, "n_filters": 192, "rates": [8, 8, 8, 4], "out_channel": 2},
                            "quantizer": {"dim": 128, "codebook_size": 1024, "num_quantizers": 64}})
torch.manual_seed(0)
dec = DacDecoder(cfg).eval()
with torch.no_grad():
    for p in dec.parameters(): p.normal_(0, 0.02)
codes = torch.randint(0, 1024, (64, frames))
before = hwm()
t = time.time()
audio = decode_codes(dec, codes, window=window)
print(f"frames={frames} window={window} samples={audio.shape[-1]} finite={bool(torch.isfinite(audio).all())} "
      f"s={time.time()-t:.1f} hwm_before={before:.2f}GB peak={hwm():.2f}GB")
