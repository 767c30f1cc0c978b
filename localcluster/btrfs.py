"""A real Btrfs filesystem on a loop device (root only): what the demo's chain data and the Btrfs tests live on.

``truncate`` a sparse image, ``mkfs.btrfs``, ``losetup --find --show``, ``mount``; :meth:`LoopBtrfs.close` undoes
each step that was done (unmount, detach, remove the image), also after a failure half-way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

from .cluster import ClusterError

#: mkfs.btrfs needs more than 109 MiB with the default (DUP metadata) profile.
DEFAULT_SIZE = "256M"


def unavailable() -> str | None:
    """Why a loop-mounted Btrfs cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to attach a loop device and mount Btrfs"
    if shutil.which("mkfs.btrfs") is None:
        return "mkfs.btrfs not installed (apt-get install btrfs-progs)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control missing)"
    if "btrfs" not in Path("/proc/filesystems").read_text():
        subprocess.run(["modprobe", "btrfs"], capture_output=True, check=False)
        if "btrfs" not in Path("/proc/filesystems").read_text():
            return "the kernel has no Btrfs support"
    return None


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=120)


def _checked(*cmd: str) -> str:
    result = _run(*cmd)
    if result.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()


def unmount(mount_point: Path) -> None:
    """Unmount; lazily when something still holds the filesystem."""
    if _run("umount", str(mount_point)).returncode != 0:
        _run("umount", "--lazy", str(mount_point))


class LoopBtrfs:
    """A Btrfs image mounted at ``mount_point`` (made by :meth:`open`, removed by :meth:`close`)."""

    def __init__(self, image: Path, mount_point: Path, size: str = DEFAULT_SIZE) -> None:
        self.image, self.mount_point, self.size = image, mount_point, size
        self.device: str | None = None
        self._undo = ExitStack()

    def open(self) -> LoopBtrfs:
        """Make, attach and mount it (raises ClusterError naming the step that failed)."""
        reason = unavailable()
        if reason:
            raise ClusterError(reason)
        try:
            self.mount_point.mkdir(parents=True, exist_ok=True)
            self._undo.callback(lambda: self.image.unlink(missing_ok=True))
            _checked("truncate", "-s", self.size, str(self.image))
            _checked("mkfs.btrfs", "-q", str(self.image))
            device = _checked("losetup", "--find", "--show", str(self.image))
            self.device = device
            self._undo.callback(lambda: _run("losetup", "--detach", device))
            _checked("mount", "-t", "btrfs", device, str(self.mount_point))
            self._undo.callback(unmount, self.mount_point)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Undo what open() did, in reverse order (idempotent)."""
        self._undo.close()

    def __enter__(self) -> LoopBtrfs:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def release_mount(mount_point: Path) -> None:
    """Unmount every filesystem stacked on ``mount_point`` and detach the loop devices under them (what a killed
    run left behind; the caller holds whatever lock makes the mount point its own)."""
    while mount_point.is_mount():
        device = _run("findmnt", "--noheadings", "--output", "SOURCE", "--mountpoint", str(mount_point)).stdout
        unmount(mount_point)
        for line in device.split():
            if line.startswith("/dev/loop"):
                _run("losetup", "--detach", line)


def detach_image(image: Path, mount_point: Path) -> None:
    """Tear down a LoopBtrfs made by another process (the demo's `down`): unmount, detach the loop, remove."""
    release_mount(mount_point)
    listing = _run("losetup", "--associated", str(image)).stdout
    for line in listing.splitlines():
        _run("losetup", "--detach", line.split(":", 1)[0])
    image.unlink(missing_ok=True)
