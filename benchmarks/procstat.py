"""What a process costs, read from /proc: CPU seconds (utime + stime), resident memory (VmRSS, VmHWM), the resident
memory once it settled and by kind of mapping, and the counters of the operator's own /metrics endpoint. Read by
hand, not through psutil (not a dependency of the project; each reading here is one file and a few lines).

    cpu = cpu_seconds(pid); ...; used = cpu_seconds(pid) - cpu
    rss = settled_rss(pid, settle=10.0)          # KiB
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process used so far (its threads included, its reaped children not)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces; fields from state (3rd) on
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime (14th) and stime (15th)


def status_kib(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM``-style field of /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def settled_rss(pid: int, *, settle: float, timeout: float = 180.0, window: int = 10) -> int:
    """VmRSS once it stopped moving: the median of the last `window` one-second samples, all within 1 %, taken at
    least `settle` seconds after the call."""
    began = time.monotonic()
    samples: list[int] = []
    while True:
        samples = [*samples[-(window - 1):], status_kib(pid, "VmRSS")]
        steady = len(samples) == window and max(samples) <= min(samples) * 1.01
        if steady and time.monotonic() - began >= settle:
            return int(statistics.median(samples))
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"RSS of {pid} did not settle in {timeout:.0f} s: {samples}")
        time.sleep(1.0)


#: Groups of a process's mappings for ``rss_by_mapping``: Python's object arenas (anonymous mmaps; also thread
#: stacks), glibc's brk heap (malloc of C extensions and of Python objects over 512 bytes), file-backed (libraries'
#: code and data).
MAPPING_GROUPS = ("anonymous", "heap", "files")
_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def rss_by_mapping(smaps: str) -> dict[str, int]:
    """Resident KiB of a ``/proc/<pid>/smaps`` text by ``MAPPING_GROUPS`` (``[stack]``, ``[vdso]`` and the like go
    to "anonymous"): where a process's memory is, beyond what tracemalloc or memray see of its live objects."""
    out = dict.fromkeys(MAPPING_GROUPS, 0)
    group = "anonymous"
    for line in smaps.splitlines():
        if _MAPPING.match(line):  # a mapping's header: range perms offset dev inode [path]
            fields = line.split(maxsplit=5)
            path = fields[5].strip() if len(fields) == 6 else ""
            group = "heap" if path == "[heap]" else "files" if path.startswith("/") else "anonymous"
        elif line.startswith("Rss:"):
            out[group] += int(line.split()[1])
    return out


def mapping_kib(pid: int) -> dict[str, int]:
    """``rss_by_mapping`` of a running process."""
    return rss_by_mapping(Path(f"/proc/{pid}/smaps").read_text())


def mapping_change(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    """Two ``rss_by_mapping`` readings side by side, in MiB: ``anonymous 40.1 -> 52.0, heap ...``."""
    return ", ".join(f"{group} {before.get(group, 0) / 1024:.1f} -> {after.get(group, 0) / 1024:.1f}"
                     for group in MAPPING_GROUPS) + " MiB"


def load() -> str:
    """The load averages (1, 5, 15 min) and the CPU count, to print next to figures from a shared machine."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def counters(exposition: str, name: str, by: str) -> dict[str, float]:
    """The samples of counter ``name`` (e.g. ``aitbc_reconcile``) in a Prometheus exposition, summed by label ``by``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_total":
                key = sample.labels.get(by, "")
                out[key] = out.get(key, 0.0) + sample.value
    return out


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """Per-key difference of two counter readings (keys of either)."""
    return {key: after.get(key, 0.0) - before.get(key, 0.0) for key in {*after, *before}}
