"""The JSON report of `volume prepare`: compact, and small enough for a Kubernetes termination message.

The kubelet keeps at most 4096 bytes of ``/dev/termination-log``; the operator parses the message into the
AitbcNode's ``status.volume``. `render` always returns a valid VolumeReport document within the limit: when the
full report is too large (many chains with long names), per-chain actions are summarised per verb
(``mkdir x16``), then the error text is shortened, then per-chain sizes are dropped.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..models.volume_report import VolumeReport

#: The kubelet's limit on a container's termination message.
TERMINATION_MESSAGE_LIMIT = 4096
#: Where the kubelet mounts the termination-message file by default (terminationMessagePath).
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")


def dumps(wire: dict[str, Any]) -> str:
    """Compact JSON (no spaces)."""
    return json.dumps(wire, separators=(",", ":"), ensure_ascii=False)


def summarize_actions(actions: list[str]) -> list[str]:
    """``["mkdir a", "mkdir b", "wal a"]`` -> ``["mkdir x2", "wal x1"]``, first-seen order."""
    verbs = Counter(action.split(" ", 1)[0] for action in actions)
    return [f"{verb} x{count}" for verb, count in verbs.items()]


def _shrink_steps(wire: dict[str, Any]) -> list[dict[str, Any]]:
    summarized = {**wire, "actions": summarize_actions(wire.get("actions", []))}
    short_error = {**summarized}
    if "error" in short_error:
        short_error["error"] = _truncate(short_error["error"], 512)
    no_sizes = {**short_error, "chains": [{k: v for k, v in c.items() if k != "size"} for c in wire["chains"]]}
    if "error" in no_sizes:
        no_sizes["error"] = _truncate(no_sizes["error"], 160)
    return [wire, summarized, short_error, no_sizes]


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(report: VolumeReport, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """The report as compact JSON of at most ``limit`` bytes (UTF-8)."""
    text = ""
    for wire in _shrink_steps(report.to_wire()):
        text = dumps(wire)
        if len(text.encode()) <= limit:
            return text
    raise ValueError(f"volume report does not fit in {limit} bytes even summarised ({len(text.encode())} bytes)")


def write_termination_message(text: str, path: Path | None) -> bool:
    """Write ``text`` to the termination-message file; False (silently) when that is not possible.

    The default path is only written when it exists: the kubelet mounts it into the container, and outside a
    pod this must not create a regular file in /dev. An explicitly configured path is created.
    """
    if path is None or (path == DEFAULT_TERMINATION_LOG and not path.exists()):
        return False
    try:
        path.write_text(text)
    except OSError:
        return False
    return True
