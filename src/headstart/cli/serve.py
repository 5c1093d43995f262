"""`headstart serve MODEL`: an HTTP server (FastAPI + uvicorn) for a model bundle."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a saved model over HTTP (/predict, /metadata, /health, /docs)",
        description="Serve a model bundle over HTTP. POST /predict takes texts as JSON "
        '({"texts": [...]}) or images as multipart files or base64 JSON ({"images": [...]}) '
        "and returns a label and probabilities per input; concurrent requests are grouped "
        "into one forward pass (up to --max-batch inputs, waiting at most --max-wait-ms). "
        "OpenAPI docs at /docs.",
    )
    p.add_argument("model", help="a model bundle folder (runs/NAME/model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="most inputs per forward pass; 1 turns micro-batching off (default: 32)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a batch waits for more requests after its first (default: 5)",
    )
    p.add_argument(
        "--max-inputs", type=int, default=64, help="most inputs per request (default: 64)"
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=16.0,
        help="largest request body in MiB; larger ones get 413 (default: 16)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serving import Limits, create_app
    except ImportError as exc:
        raise ConfigError(
            f"headstart serve needs FastAPI, uvicorn and python-multipart ({exc.name} is "
            "missing): pip install 'headstart[serve]'"
        ) from exc
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535; got {args.port}")
    limits = Limits(max_inputs=args.max_inputs, max_body_bytes=int(args.max_body_mb * 2**20))
    app = create_app(
        args.model, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, limits=limits
    )
    print(
        f"headstart serve: {args.model} on http://{args.host}:{args.port} "
        f"(docs: /docs; batches of up to {args.max_batch}, waiting up to {args.max_wait_ms:g} ms)",
        file=sys.stderr,
        flush=True,
    )
    verbose = bool(getattr(args, "verbose", False))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info" if verbose else "warning",
        access_log=verbose,
    )
    return 0
