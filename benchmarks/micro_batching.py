"""Throughput of POST /v1/predict at concurrency 32 with micro-batching off and on, 1 and 2 workers.

    python -m benchmarks.micro_batching [--requests 600] [--setups 1:off,1:0,1:5,2:off,2:0]

Each setup WORKERS:BATCHING gets its own server, in turn, in one run. BATCHING is `off`
(APPAREL_MICRO_BATCHING=false: every request runs its own pass), or a window in milliseconds
(APPAREL_BATCH_WAIT_MS): 0 = requests share a pass only when they queue behind a running one.
"""

import argparse
import asyncio
import tempfile
from pathlib import Path

from benchmarks.api_load import load, payloads
from benchmarks.common import print_table, write_result
from support.local_server import LiveServer

CONCURRENCY = 32


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument(
        "--setups", default="1:off,1:0,1:5,2:off,2:0", help="WORKERS:BATCHING, comma-separated"
    )
    args = parser.parse_args()
    rows = []
    targets = payloads()
    for setup in args.setups.split(","):
        workers, batching = setup.split(":")
        env = (
            {"APPAREL_MICRO_BATCHING": "false"}
            if batching == "off"
            else {"APPAREL_MICRO_BATCHING": "true", "APPAREL_BATCH_WAIT_MS": batching}
        )
        with tempfile.TemporaryDirectory(prefix="micro-batching-") as scratch:  # the server log
            server = LiveServer.start(Path(scratch) / "server.log", "--workers", workers, env=env)
            try:
                for name, files in targets.items():
                    asyncio.run(load(server.url + "/v1/predict", CONCURRENCY, 64, files))  # warm-up
                    result = asyncio.run(load(server.url + "/v1/predict", CONCURRENCY, args.requests, files))
                    rows.append({"workers": int(workers), "batching": batching, "route": name, **result})
            finally:
                server.stop()
    print_table(f"micro-batching at concurrency {CONCURRENCY}, {args.requests} requests per row", rows)
    errors = sum(row["errors"] for row in rows)
    write_result("micro_batching", rows, requests_per_row=args.requests, errors=errors)
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
