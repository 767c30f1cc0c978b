"""Filesystem facts and the NOCOW attribute, without e2fsprogs or btrfs-progs (the image has neither).

- The filesystem type comes from ``statfs(2)``'s ``f_type`` magic (exact for the path, also behind bind mounts);
  for magics not in the table, from the longest matching mount point in ``/proc/self/mountinfo``.
- NOCOW is ``FS_NOCOW_FL`` read and written with the ``FS_IOC_GETFLAGS``/``FS_IOC_SETFLAGS`` ioctls, exactly what
  ``lsattr``/``chattr +C`` do. Only Btrfs honours it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import struct
from pathlib import Path

#: ``_IOR('f', 1, long)`` and ``_IOW('f', 2, long)`` on 64-bit Linux; the kernel reads and writes an int.
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
#: ``chattr +C``: do not copy-on-write (Btrfs).
FS_NOCOW_FL = 0x00800000

BTRFS_SUPER_MAGIC = 0x9123683E
#: statfs ``f_type`` magics (linux/magic.h) of filesystems a chain volume may plausibly live on.
FS_MAGICS: dict[int, str] = {
    BTRFS_SUPER_MAGIC: "btrfs",
    0xEF53: "ext4",  # also ext2/ext3
    0x58465342: "xfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlay",
    0x2FC12FC1: "zfs",
    0xCA451A4E: "bcachefs",
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0x65735546: "fuse",
    0x01021997: "9p",
    0x00C36400: "ceph",
    0x73717368: "squashfs",
    0xF2F52010: "f2fs",
}
#: Filesystems on which FS_NOCOW_FL means something.
NOCOW_FILESYSTEMS = frozenset({"btrfs"})

_FLAGS = struct.Struct("i")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class _Statfs(ctypes.Structure):
    # Only f_type is read; the rest of struct statfs (120 bytes on 64-bit) is padding room.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def statfs_magic(path: Path) -> int:
    """The ``f_type`` of the filesystem holding ``path`` (statfs(2))."""
    buf = _Statfs()
    if _libc().statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return int(buf.f_type) & 0xFFFFFFFF


def _unescape_mountinfo(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo`` (octal)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mountinfo_fstype(path: Path, mountinfo: str) -> str | None:
    """The filesystem type of the longest mount point containing ``path`` in a ``/proc/self/mountinfo`` text."""
    target = Path(os.path.realpath(path))
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        mount_point = Path(_unescape_mountinfo(fields[4]))
        if (target == mount_point or mount_point in target.parents) and (
            best is None or len(mount_point.parts) >= best[0]
        ):
            best = (len(mount_point.parts), right.split()[0])
    return best[1] if best else None


def filesystem_type(path: Path) -> str:
    """The filesystem type holding ``path``: ``btrfs``, ``ext4``, ``xfs``, ``tmpfs``, ``overlay``, ..."""
    magic = statfs_magic(path)
    if magic in FS_MAGICS:
        return FS_MAGICS[magic]
    try:
        name = mountinfo_fstype(path, Path("/proc/self/mountinfo").read_text())
    except OSError:
        name = None
    return name or f"unknown-{magic:#x}"


def supports_nocow(fs_type: str) -> bool:
    """Whether FS_NOCOW_FL has an effect on this filesystem type."""
    return fs_type in NOCOW_FILESYSTEMS


def _open_for_flags(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def get_flags(path: Path) -> int:
    """The inode flags of ``path`` (``lsattr``)."""
    fd = _open_for_flags(path)
    try:
        buf = bytearray(_FLAGS.size)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        return int(_FLAGS.unpack(buf)[0])
    finally:
        os.close(fd)


def has_nocow(path: Path) -> bool:
    """Whether ``path`` carries FS_NOCOW_FL. False where the filesystem has no inode flags at all."""
    try:
        return bool(get_flags(path) & FS_NOCOW_FL)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
            return False
        raise


def set_nocow(path: Path) -> bool:
    """Set FS_NOCOW_FL on ``path`` (``chattr +C``) and read it back.

    Returns True when the flag was newly set, False when it was already there. Raises OSError when the kernel
    refuses or silently ignores it (Btrfs ignores it on a non-empty regular file: re-create such files instead).
    """
    fd = _open_for_flags(path)
    try:
        buf = bytearray(_FLAGS.size)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        flags = int(_FLAGS.unpack(buf)[0])
        if flags & FS_NOCOW_FL:
            return False
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, bytearray(_FLAGS.pack(flags | FS_NOCOW_FL)), False)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        if not int(_FLAGS.unpack(buf)[0]) & FS_NOCOW_FL:
            raise OSError(errno.EOPNOTSUPP, "the filesystem ignored FS_NOCOW_FL", str(path))
        return True
    finally:
        os.close(fd)
