"""The ``khala`` command: generate, prompt, decode, weights, tiny."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from engine.errors import Cancelled, KhalaError, OutputError
from engine.request import SongRequest

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3")
EXIT_ERROR, EXIT_CANCELLED = 1, 130


def _add_prompt_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tags", default="", help="comma-separated style tags, e.g. 'Pop, Female Vocals, Piano'")
    p.add_argument("--description", default="", help="a free description (used instead of tags)")
    p.add_argument("--genre", default="")
    lyr = p.add_mutually_exclusive_group()
    lyr.add_argument("--lyrics", default=None, help="the lyrics text ('\\n' separates lines)")
    lyr.add_argument("--lyrics-file", type=Path, default=None)
    p.add_argument("--instrumental", action="store_true")
    p.add_argument("--duration", type=int, default=2, metavar="MIN", help="whole minutes, 0..10 (default 2)")


def _add_weights_flag(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--weights", type=Path, required=required, metavar="DIR",
                   help="folder with the six weight files and tokenizer.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="khala", description="Write songs with the Khala music model.")
    parser.add_argument("--version", action="store_true", help="print versions and the device, then exit")
    sub = parser.add_subparsers(dest="command")

    gen = sub.add_parser("generate", help="write a song to an audio file")
    _add_weights_flag(gen)
    _add_prompt_flags(gen)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=80)
    gen.add_argument("--top-k-sr", type=int, default=10, help="super-resolution top-k (upstream: 10)")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--variations", type=int, default=1)
    gen.add_argument("--max-tokens", type=int, default=None, help="cap on backbone tokens (default 23552)")
    gen.add_argument("--device", default=None, help="auto, mps, cuda or cpu (env KHALA_DEVICE)")
    gen.add_argument("--dtype", default=None, help="auto, float32, float16 or bfloat16 (env KHALA_DTYPE)")
    gen.add_argument("--keep-loaded", action="store_true", help="keep every model in memory (faster, larger)")
    gen.add_argument("--out", type=Path, required=True, metavar="FILE.{wav,flac,mp3}")
    gen.add_argument("--codes-out", type=Path, default=None, metavar="FILE.npy")
    gen.add_argument("--quiet", action="store_true")

    pr = sub.add_parser("prompt", help="print the prompt text and token ids as JSON (loads no model)")
    _add_prompt_flags(pr)
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", type=Path, metavar="DIR")
    src.add_argument("--tokenizer", type=Path, metavar="FILE")
    pr.add_argument("--json", action="store_true", help="JSON output (the only format)")

    dec = sub.add_parser("decode", help="decode saved codes [64, frames] to audio")
    _add_weights_flag(dec)
    dec.add_argument("--codes", type=Path, required=True, metavar="FILE.npy")
    dec.add_argument("--out", type=Path, required=True)
    dec.add_argument("--device", default=None)
    dec.add_argument("--dtype", default=None, help="decoder dtype (default float32, env KHALA_DECODER_DTYPE)")
    dec.add_argument("--quiet", action="store_true")

    tiny = sub.add_parser("tiny", help="write a tiny random checkpoint (for trying the pipeline without weights)")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--seed", type=int, default=0)

    try:
        from engine.weights.cli import add_weights_commands
    except ImportError:
        pass
    else:
        add_weights_commands(sub)
    return parser


def request_from_args(args: argparse.Namespace) -> SongRequest:
    from engine.prompt.template import read_lyrics_file
    lyrics = args.lyrics if args.lyrics is not None else ""
    if args.lyrics_file is not None:
        lyrics = read_lyrics_file(args.lyrics_file)
    lyrics = lyrics.replace("\\n", "\n")
    fields = dict(tags=args.tags, description=args.description, genre=args.genre, lyrics=lyrics,
                  instrumental=args.instrumental, minutes=args.duration)
    for name in ("temperature", "top_k", "seed", "variations", "max_tokens"):
        if hasattr(args, name):
            fields[name] = getattr(args, name)
    if hasattr(args, "top_k_sr"):
        fields["top_k_superres"] = args.top_k_sr
    return SongRequest(**fields)


def variation_path(out: Path, index: int) -> Path:
    return out if index == 0 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")


def sidecar_path(audio_path: Path) -> Path:
    return audio_path.with_suffix(".json")


def check_output_path(path: Path, suffixes: Sequence[str]) -> None:
    """Fail before any model is loaded when the output cannot be written."""
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"Output {path} must end in {', '.join(suffixes)}.")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"Cannot write {path}: folder {folder} does not exist.")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"Cannot write {path}: folder {folder} is not writable.")
    if path.is_dir():
        raise OutputError(f"Cannot write {path}: it is a folder.")


def cmd_generate(args: argparse.Namespace) -> int:
    from engine.pipeline import Pipeline
    from engine.cli.progress_bar import ProgressBar

    request = request_from_args(args)
    request.validate()
    check_output_path(args.out, AUDIO_SUFFIXES)
    if args.codes_out is not None:
        check_output_path(args.codes_out, (".npy",))
    pipeline = Pipeline(args.weights, device=args.device, dtype=args.dtype, keep_loaded=args.keep_loaded)
    bar = ProgressBar() if not args.quiet else None
    try:
        _run_generation(args, pipeline, request, bar)
    finally:
        if bar is not None:
            bar.finish_line()
    return 0


def _run_generation(args: argparse.Namespace, pipeline, request: SongRequest, bar) -> None:
    import numpy as np
    from engine.audio import write_audio, write_json_atomic, write_npy_atomic
    from engine.request import CancelToken, Log, Progress, Song, Stage

    for event in pipeline.generate(request, CancelToken()):
        if bar is not None and isinstance(event, Stage):
            bar.stage_started(event.name, event.variation)
        elif bar is not None and isinstance(event, Progress):
            bar.update(event.done, event.total)
        elif isinstance(event, Log):
            if bar is not None:
                bar.log(event.text)
            elif event.text.startswith("Prompt too long"):
                print(f"warning: {event.text}", file=sys.stderr)
        elif isinstance(event, Song):
            out = variation_path(args.out, event.variation)
            write_audio(out, event.audio, event.sample_rate)
            write_json_atomic(sidecar_path(out), {"audio": out.name, **event.metadata})
            if args.codes_out is not None:
                write_npy_atomic(variation_path(args.codes_out, event.variation), event.codes.astype(np.int64))
            if bar is not None:
                bar.log(f"wrote {out} ({event.seconds:.1f} s, seed {event.metadata['seed']})")


def cmd_prompt(args: argparse.Namespace) -> int:
    from engine.prompt.template import build_prompts
    from engine.prompt.tokenizer import Tokenizer
    request = request_from_args(args)
    if args.tokenizer is not None:
        tok_path = args.tokenizer
    else:
        tok_path = args.weights / "tokenizer.json"
    pair = build_prompts(request, Tokenizer.from_file(tok_path))
    print(json.dumps({"backbone_text": pair.backbone_text, "backbone_ids": list(pair.backbone_ids),
                      "superres_text": pair.superres_text, "superres_ids": list(pair.superres_ids),
                      "truncated": list(pair.truncated)}, ensure_ascii=False))
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from engine.audio import write_audio
    from engine.stages.codec import check_codes, decode_codes, load_decoder
    from engine.device import pick_decoder_dtype, pick_device
    from engine.errors import RequestError
    from engine.request import SAMPLE_RATE
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


def cmd_tiny(args: argparse.Namespace) -> int:
    from engine.testing.tiny import write_tiny_weights
    folder = write_tiny_weights(args.dir, seed=args.seed)
    print(f"wrote a tiny random checkpoint to {folder}", file=sys.stderr)
    return 0


def print_version() -> int:
    import engine
    from engine.device import dtype_name, pick_device, pick_dtype
    import torch
    device = pick_device()
    print(f"khala {engine.__version__}  torch {torch.__version__}  device {device} ({dtype_name(pick_dtype(device))})")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate": cmd_generate, "prompt": cmd_prompt, "decode": cmd_decode, "tiny": cmd_tiny,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.version:
            return print_version()
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
        return int(handler(args) or 0)
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except KhalaError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
