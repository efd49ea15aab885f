"""``khala prompt``: print the prompt text and token ids as JSON (loads no model)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli.common import add_prompt_flags, request_from_args


def register(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("prompt", help="print the prompt text and token ids as JSON (loads no model)")
    add_prompt_flags(pr)
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", type=Path, metavar="DIR")
    src.add_argument("--tokenizer", type=Path, metavar="FILE")
    pr.add_argument("--json", action="store_true", help="JSON output (the only format)")
    pr.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.prompt.template import build_prompts
    from engine.prompt.tokenizer import Tokenizer
    request = request_from_args(args)
    request.validate()  # the same checks as `khala generate`
    tok_path = args.tokenizer if args.tokenizer is not None else args.weights / "tokenizer.json"
    pair = build_prompts(request, Tokenizer.from_file(tok_path))
    print(json.dumps({"backbone_text": pair.backbone_text, "backbone_ids": list(pair.backbone_ids),
                      "superres_text": pair.superres_text, "superres_ids": list(pair.superres_ids),
                      "truncated": list(pair.truncated), "dropped_lines": pair.dropped_lines},
                     ensure_ascii=False))
    return 0
