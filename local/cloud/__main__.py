"""CLI: ``python -m local.cloud --port N --state-dir DIR [--host 127.0.0.1]`` (local/PLATFORM.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from local.cloud.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.cloud", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True, help="where the CA (ca.pem) is kept")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args.host, args.port, args.state_dir))


if __name__ == "__main__":
    main()
