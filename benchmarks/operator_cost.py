"""What the operator process does and costs while a benchmark drives it: readings of its CPU (/proc/<pid>/stat) and
of its own counters (/metrics: reconciles by kind, its API client's writes and reads), and the two idle measurements
every benchmark at scale needs, judged from outside as well (resourceVersions, Events, DDL lines in the server log):

- `idle_window`: the running operator's drift checks of every resource, none of them changing anything;
- `restart`: a fresh operator process from its start until it resumed every resource.

    reading = read(proc); ...; cost = read(proc).cpu - reading.cpu
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from benchmarks import procstat
from tests.operator_fixtures import OperatorProcess

POLL = 0.25
#: Between readings while the operator idles: each reading scrapes /metrics, which costs the operator CPU too.
IDLE_POLL = 2.0


@dataclass(frozen=True)
class Reading:
    """The operator at one moment: monotonic time, CPU seconds used, reconciles by kind, its client's writes, and
    its client's reads by verb (GET, LIST)."""

    at: float
    cpu: float
    reconciles: Mapping[str, float]
    writes: float
    reads: Mapping[str, float] = field(default_factory=dict)

    def reconciled(self, kind: str, since: Reading | None = None) -> float:
        """Reconciles of ``kind`` so far (or since an earlier reading)."""
        return self.reconciles.get(kind, 0.0) - (since.reconciles.get(kind, 0.0) if since else 0.0)


def read(proc: OperatorProcess) -> Reading:
    """A reading of the running operator (CPU first, so the metrics scrape's own CPU is not in it)."""
    assert proc.proc is not None
    cpu = procstat.cpu_seconds(proc.proc.pid)
    text = proc.metrics()
    return Reading(time.monotonic(), cpu, procstat.counters(text, "aitbc_reconcile", "kind"),
                   sum(procstat.counters(text, "aitbc_kube_writes", "verb").values()),
                   procstat.counters(text, "aitbc_kube_reads", "verb"))


def scrape_cost(proc: OperatorProcess, scrapes: int = 20) -> float:
    """CPU seconds one /metrics scrape costs the operator (measured over back-to-back scrapes)."""
    assert proc.proc is not None
    before = procstat.cpu_seconds(proc.proc.pid)
    for _ in range(scrapes):
        proc.metrics()
    return (procstat.cpu_seconds(proc.proc.pid) - before) / scrapes


def wait_reading(proc: OperatorProcess, done: Callable[[Reading], bool], timeout: float, what: str,
                 poll: float = POLL) -> tuple[Reading, int]:
    """Poll readings until ``done`` holds; the first reading for which it does, and how many were taken."""
    deadline = time.monotonic() + timeout
    taken = 0
    while True:
        reading = read(proc)
        taken += 1
        if done(reading):
            return reading, taken
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout:.0f} s (reconciles {dict(reading.reconciles)})")
        time.sleep(poll)


@dataclass
class Outside:
    """How a benchmark sees the cluster and the server from outside: resourceVersions of everything the operator
    could write, the number of Events, and DDL lines in the server log since an offset (None: external server)."""

    versions: Callable[[], dict[str, str]]
    events: Callable[[], int]
    log_offset: Callable[[], int] | None = None
    ddl_since: Callable[[int], int] | None = None


@dataclass
class Quiet:
    """What changed, seen from outside, while the operator was supposed to change nothing."""

    versions_changed: int = 0
    events_posted: int = 0
    log_ddl: int | None = None

    @property
    def clean(self) -> bool:
        return self.versions_changed == 0 and self.events_posted == 0 and not self.log_ddl


class Watch:
    """Outside state taken at the start; ``quiet()`` compares it with the state now."""

    def __init__(self, outside: Outside) -> None:
        self.outside = outside
        self.versions = outside.versions()
        self.events = outside.events()
        self.offset = outside.log_offset() if outside.log_offset else None

    def quiet(self) -> Quiet:
        after = self.outside.versions()
        changed = sum(1 for key, rv in after.items() if self.versions.get(key) != rv)
        ddl = self.outside.ddl_since(self.offset) if self.outside.ddl_since and self.offset is not None else None
        return Quiet(changed, self.outside.events() - self.events, ddl)


@dataclass
class Window:
    """An idle stretch of the operator: how long, CPU used, reconciles by kind, writes, what changed outside."""

    seconds: float = 0.0
    cpu: float = 0.0
    reconciles: dict[str, float] = field(default_factory=dict)
    writes: float = 0.0
    quiet: Quiet = field(default_factory=Quiet)
    reads: dict[str, float] = field(default_factory=dict)

    def per(self, kind: str) -> float:
        """CPU seconds per reconcile of ``kind`` in the window."""
        count = self.reconciles.get(kind, 0.0)
        return self.cpu / count if count else float("nan")


def idle_window(proc: OperatorProcess, outside: Outside, kind: str, count: int, timeout: float) -> Window:
    """From now until the operator made ``count`` more reconciles of ``kind`` (its drift timers firing). The CPU
    of the benchmark's own /metrics scrapes in the window is measured and left out."""
    cost = scrape_cost(proc)
    watch = Watch(outside)
    start = read(proc)
    end, scrapes = wait_reading(proc, lambda r: r.reconciled(kind, start) >= count, timeout, f"{count} drift checks",
                                poll=IDLE_POLL)
    time.sleep(1.0)  # the last check's status write, if it made one, lands before we look
    return Window(end.at - start.at, end.cpu - start.cpu - scrapes * cost,
                  {k: end.reconciled(k, start) for k in end.reconciles}, end.writes - start.writes, watch.quiet(),
                  procstat.delta(end.reads, start.reads))


def restart(make: Callable[[], OperatorProcess], outside: Outside, counts: Mapping[str, int],
            timeout: float) -> tuple[OperatorProcess, Window]:
    """Start a fresh operator; the window from its start until it reconciled (resumed) ``counts`` of each kind.
    The process keeps running (the caller stops it). Its CPU includes the interpreter's start and imports."""
    watch = Watch(outside)
    began = time.monotonic()
    proc = make().start(timeout=timeout)
    try:
        end, _ = wait_reading(proc, lambda r: all(r.reconciled(k) >= n for k, n in counts.items()), timeout,
                              "every resource resumed")
    except BaseException:
        proc.stop()
        raise
    time.sleep(1.0)
    return proc, Window(end.at - began, end.cpu, dict(end.reconciles), end.writes, watch.quiet(), dict(end.reads))
