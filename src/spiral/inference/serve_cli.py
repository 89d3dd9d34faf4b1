"""Running the server: ``spiral serve --model NAME_OR_DIR``, or in a thread for tests.

uvicorn serves the Starlette app from :func:`spiral.inference.serve.build_app`. Port 0 asks
the operating system for a free port (what the tests and the load test use); the bound
port is read back from the listening socket. Loopback (127.0.0.1) is the default host: the
server has no authentication. Chapter: stage 17 (inference).
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

__all__ = ["ServerThread", "add_parser"]


class ServerThread:
    """uvicorn in a background thread: ``with ServerThread(app) as base_url: ...``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.host = host

    def start(self, timeout: float = 20.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_parser(subparsers: Any) -> None:
    """Register ``serve`` on the ``spiral`` command."""
    from spiral import cli_args as ca

    p = subparsers.add_parser("serve", help="an OpenAI-compatible completions server (stage 17)",
                              description="Serve a model at /v1/completions (streaming by "
                              "server-sent events) with continuous batching. Needs the "
                              "`serve` extra: pip install 'spiral[serve]'.")
    p.add_argument("--model", required=True,
                   help="a pretrained name or folder, or a run directory of `spiral train`")
    p.add_argument("--name", help="the model id clients send (default: the folder's name)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    p.add_argument("--port", type=ca.nonneg_int, default=8000, help="0 picks a free port")
    p.add_argument("--max-batch", type=ca.positive_int, default=8)
    p.add_argument("--block-size", type=ca.positive_int, default=16)
    p.add_argument("--num-blocks", type=ca.positive_int,
                   help="KV-cache blocks (default: max-batch full-context sequences)")
    p.add_argument("--no-prefix-cache", action="store_true",
                   help="do not share common prompt prefixes between requests")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as err:
        raise SystemExit(f"spiral serve needs the serve extra ({err.name} is missing): "
                         "pip install 'spiral[serve]'") from None
    from spiral.inference.serve import ServeConfig, build_app, load_model

    try:
        model, tok, name = load_model(args.model)
    except (OSError, ValueError, RuntimeError) as err:
        raise SystemExit(f"spiral serve: {err}") from None
    cfg = ServeConfig(block_size=args.block_size, max_batch=args.max_batch,
                      num_blocks=args.num_blocks, prefix_cache=not args.no_prefix_cache)
    app = build_app(model, tok, args.name or name, cfg)
    print(f"serving {args.name or name!r} on http://{args.host}:{args.port}/v1 "
          f"(context {model.context_length}, batch {args.max_batch})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
