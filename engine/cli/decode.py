"""``khala decode``: decode saved codes [64, frames] to audio."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import AUDIO_SUFFIXES, add_weights_flag, check_output_path, weights_dir
from engine.errors import KhalaError


def register(sub: argparse._SubParsersAction) -> None:
    dec = sub.add_parser("decode", help="decode saved codes [64, frames] to audio")
    add_weights_flag(dec, required=False)
    dec.add_argument("--codes", type=Path, required=True, metavar="FILE.npy",
                     help="a NumPy .npy file: [64, frames] integer codes 0..1023, any integer type")
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
    from engine.request import SAMPLE_RATE
    from engine.stages.codec import decode_codes, load_decoder
    from engine.weights.folder import locate_weights

    check_output_path(args.out, AUDIO_SUFFIXES)
    check_not_a_song(args.out)
    codes = read_codes(args.codes)  # checked before the decoder loads
    tensor = torch.from_numpy(codes.astype(np.int64))
    paths = locate_weights(weights_dir(args))
    device = pick_device(args.device)
    decoder = load_decoder(paths.decoder, paths.decoder_config, device, pick_decoder_dtype(args.dtype))
    audio = decode_codes(decoder, tensor.to(device, torch.int64))
    write_audio(args.out, audio.to("cpu", torch.float32).numpy(), SAMPLE_RATE)
    if not args.quiet:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def check_not_a_song(out: Path) -> None:
    """Refuse to write bare audio over a Khala song: its sidecar and codes would describe other audio."""
    from engine.song_file import codes_path, sidecar_path

    companions = [p.name for p in (sidecar_path(out), codes_path(out)) if p.exists()]
    if companions:
        raise KhalaError(f"{out.name} is a Khala song ({', '.join(companions)} beside it); decoding over it would "
                         "leave them describing other audio. Choose another --out name.")


def read_codes(path: Path) -> "np.ndarray":
    """The [64, frames] integer array in the ``.npy`` file ``path``; KhalaError (one line naming
    the file) for a missing or unreadable file, a ``.npz`` archive, a pickled object, or codes
    that are not integers in 0..1023 (any integer dtype is accepted)."""
    from engine.errors import RequestError
    from engine.song_file import NOT_NPY, NPZ, read_npy
    from engine.stages.codec import check_codes

    try:
        loaded = read_npy(path)
    except OSError as error:
        raise KhalaError(f"Cannot read codes from {path}: {error.strerror or error}") from None
    except ValueError as error:
        if str(error) == NOT_NPY:
            raise KhalaError(f"{path} is not a NumPy .npy file; give [64, frames] integer codes saved with "
                             "numpy.save.") from None
        if str(error) == NPZ:
            raise KhalaError(f"{path} is a .npz archive; give the codes as one .npy array "
                             "(numpy.save), [64, frames] integers.") from None
        raise KhalaError(f"Cannot read codes from {path}: {error}") from None
    try:
        check_codes(loaded)
    except RequestError as error:
        raise KhalaError(f"{path}: {error}") from None
    return loaded
