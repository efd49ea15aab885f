"""``khala decode``: decode saved codes [64, frames] to audio."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import AUDIO_SUFFIXES, add_weights_flag, check_output_path
from engine.errors import KhalaError


def register(sub: argparse._SubParsersAction) -> None:
    dec = sub.add_parser("decode", help="decode saved codes [64, frames] to audio")
    add_weights_flag(dec)
    dec.add_argument("--codes", type=Path, required=True, metavar="FILE.npy")
    dec.add_argument("--out", type=Path, required=True)
    dec.add_argument("--device", default=None)
    dec.add_argument("--dtype", default=None, help="decoder dtype (default float32, env KHALA_DECODER_DTYPE)")
    dec.add_argument("--quiet", action="store_true")
    dec.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from engine.audio import write_audio
    from engine.device import pick_decoder_dtype, pick_device
    from engine.errors import RequestError
    from engine.request import SAMPLE_RATE
    from engine.stages.codec import check_codes, decode_codes, load_decoder
    from engine.weights.folder import locate_weights

    check_output_path(args.out, AUDIO_SUFFIXES)
    try:
        codes = np.load(args.codes, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise KhalaError(f"Cannot read codes from {args.codes}: {error}") from None
    try:
        tensor = torch.from_numpy(codes)
        check_codes(tensor)  # before the decoder loads
    except TypeError:
        raise KhalaError(f"{args.codes} must hold integer codes; got {codes.dtype}.") from None
    except RequestError as error:
        raise KhalaError(f"{args.codes}: {error}") from None
    paths = locate_weights(args.weights)
    device = pick_device(args.device)
    decoder = load_decoder(paths.decoder, paths.decoder_config, device, pick_decoder_dtype(args.dtype))
    audio = decode_codes(decoder, tensor.to(device, torch.int64))
    write_audio(args.out, audio.to("cpu", torch.float32).numpy(), SAMPLE_RATE)
    if not args.quiet:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
