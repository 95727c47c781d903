"""Start the service under uvicorn: `serve [--host H] [--port P] [--workers N] [--model PATH]`.

Flags override the environment (`APPAREL_HOST`, `APPAREL_PORT`, `APPAREL_WORKERS`, `APPAREL_MODEL_PATH`);
settings reach every worker through the environment.
"""

import argparse
import os
from pathlib import Path

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default=os.environ.get("APPAREL_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("APPAREL_PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("APPAREL_WORKERS", "1")))
    parser.add_argument("--model", type=Path, help="artifact to serve (default: the promoted model)")
    args = parser.parse_args(argv)
    if args.model:
        os.environ["APPAREL_MODEL_PATH"] = str(args.model.resolve())
    where = f"http://{args.host}:{args.port}/" if args.port else "a free port (uvicorn says which)"
    print(f"serving on {where} (web page), /docs (API), {args.workers} worker(s)")
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,  # the app logs each request with its request id
        server_header=False,  # no "server: uvicorn" for a scanner to match versions against
        # httptools parsing (C) with deadlines for slow clients, a connection cap and size limits; with
        # uvloop, +14% PNG requests per second against h11 and asyncio's loop (README, benchmarks).
        http="api.connections:ServiceProtocol",
        ws="none",  # no WebSocket routes: every upgrade is refused (api.connections)
        loop="uvloop",  # named, not "auto": without it installed, this fails instead of serving slower
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
