"""Where a process spends its CPU: a py-spy recording (``pip install py-spy``; ``-e '.[profile]'``) of a running pid,
and a summary of it by thread and by the package of the innermost Python frame.

    with record(pid, Path("create.txt")):
        ...                              # the work to profile
    print(summary(Path("create.txt")))
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: A raw (collapsed) stack line: ``frame;frame;...;frame count``; with --threads the first frame names the thread.
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:)]*)(?::\d+)?\)$")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy (or -e '.[profile]')")
    return found


@contextmanager
def record(pid: int, output: Path, *, rate: int = 100) -> Iterator[None]:
    """Sample ``pid`` (threads named, running threads only) into ``output`` (raw collapsed stacks) for the block."""
    proc = subprocess.Popen([_py_spy(), "record", "--pid", str(pid), "--output", str(output), "--format", "raw",
                             "--threads", "--rate", str(rate), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if proc.returncode not in (0, -signal.SIGINT) and not output.exists():
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")


@contextmanager
def recorded(pid: int, directory: Path | None, what: str, summaries: dict[str, str]) -> Iterator[None]:
    """With a ``directory`` (a benchmark's ``--profile DIR``): ``record`` the block into DIR/<what>.txt and put its
    ``summary`` into ``summaries[what]``; without one, nothing."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{what}.txt"
    with record(pid, path):
        yield
    summaries[what] = summary(path)


def _package(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    path = match["file"] if match else frame
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if not parts:
        return "?"
    head = parts[0].removesuffix(".py")
    return "/".join(parts[:2]).removesuffix(".py") if head == "aitbc_operator" and len(parts) > 1 else head


def _thread(frame: str) -> str:
    """Thread groups: ``thread (TID): NAME`` with pool numbers and per-server suffixes folded (``kube-api``,
    ``pg-admin``, ``MainThread`` = kopf's event loop, ``process_request_thread`` = a /metrics scrape)."""
    name = re.sub(r"^thread \(\d+\):?\s*", "", frame.strip())
    name = re.sub(r"^Thread-\d+ \((.*)\)$", r"\1", name)
    return re.sub(r"[-_]?\d+$", "", name.split(" ")[0]) or "?"


#: Innermost frames of a thread that waits rather than computes (py-spy's idle detection misses some of them).
_WAITING = re.compile(r"^(\S+\.)?(select|poll|wait|_wait_for_tstate_lock|acquire) \((selectors|threading)\.py"
                      r"|^_worker \(concurrent/futures/thread\.py")


def summary(path: Path, top: int = 14) -> str:
    """Shares of the (non-waiting) samples by thread group, and by thread group and package of the innermost
    frame."""
    threads: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = waiting = 0
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        frames, count = match["stack"].split(";"), int(match["count"])
        if _WAITING.match(frames[-1]):
            waiting += count
            continue
        group = _thread(frames[0])
        threads[group] += count
        leaves[f"{group}: {_package(frames[-1])}"] += count
        total += count
    if not total:
        return "no samples"
    out = [f"{total} samples computing ({waiting} more waiting in select/locks, left out)", "by thread:"]
    out += [f"  {name}: {100 * n / total:.1f} %" for name, n in threads.most_common()]
    out.append("by thread and innermost package:")
    out += [f"  {name}: {100 * n / total:.1f} %" for name, n in leaves.most_common(top)]
    return "\n".join(out)
