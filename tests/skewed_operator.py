"""`aitbc-operator` whose leader election runs on a wall clock moved by SECONDS (tests only; the product has no such
knob): ``python -m tests.skewed_operator SECONDS run ...``. The times it writes into the Lease (renewTime,
acquireTime) are off by that much, as on a machine whose clock is wrong."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

from aitbc_operator.cli import main as operator_main
from aitbc_operator.k8s import lease


def main(argv: list[str]) -> int:
    """Skew the election's clock by argv[0] seconds, then run the operator's command line argv[1:]."""
    skew, real = timedelta(seconds=float(argv[0])), lease.wall_clock

    def skewed() -> datetime:
        return real() + skew

    lease.wall_clock = skewed
    return operator_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
