"""``python -m localcluster.standin node|rpc [--port N]``."""

from __future__ import annotations

import argparse
import logging
import sys

from . import node, rpc


def main(argv: list[str] | None = None) -> int:
    """Entry point of the stand-in image."""
    parser = argparse.ArgumentParser(prog="aitbc-standin", description="stand-in AITBC node / RPC (not the real one)")
    parser.add_argument("role", choices=["node", "rpc"])
    parser.add_argument("--port", type=int, default=None, help="listen port (node 8080, rpc 8006)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.role == "node":
        return node.main(args.port or 8080)
    return rpc.main(args.port or 8006)


if __name__ == "__main__":
    sys.exit(main())
