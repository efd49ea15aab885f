"""``khala worker``: serve this machine's engine as a worker of an upstream Khala server.

The upstream dispatcher (Khala-Music-AI/Khala, backend/backend_api.py) addresses its workers as
http://WORKER_HOST:BASE_PORT+i; see docs/REMOTE.md for the set-up. Flags are kept stable:
outside checks drive them.
"""

from __future__ import annotations

import argparse

from engine.cli.common import add_weights_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="serve songs to an upstream Khala server (its worker protocol)")
    add_weights_flag(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; the protocol has no authentication)")
    p.add_argument("--port", type=int, required=True, metavar="P", help="port to listen on (0: any free port)")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="operator's cap on backbone tokens per song (default: upstream's 23552)")
    p.add_argument("--device", default=None, help="auto, mps, cuda or cpu (env KHALA_DEVICE)")
    p.add_argument("--dtype", default=None, help="auto, float32, float16 or bfloat16 (env KHALA_DTYPE)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.remote.worker import serve
    return serve(args.weights, host=args.host, port=args.port, max_tokens=args.max_tokens,
                 device=args.device, dtype=args.dtype)
