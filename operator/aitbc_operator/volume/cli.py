"""`aitbc-operator volume` subcommands."""

from __future__ import annotations

import argparse
from typing import Any


def add_volume_parser(sub: Any) -> None:
    """Register `volume prepare|backup|check`."""
    volume: argparse.ArgumentParser = sub.add_parser("volume", help="prepare, back up or check chain volumes")
    volume.add_subparsers(dest="volume_command", required=True, metavar="ACTION")
