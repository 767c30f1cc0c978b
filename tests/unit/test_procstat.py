"""The benchmarks' reading of /proc/<pid>/smaps: resident memory by kind of mapping."""

from __future__ import annotations

import os

from benchmarks import procstat

SMAPS = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234                       /usr/bin/python3.11
Size:                  4 kB
Rss:                   4 kB
VmFlags: rd mr mw me dw sd
55d0c1000000-55d0c2000000 rw-p 00000000 00:00 0                          [heap]
Size:              16384 kB
Rss:               12000 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                 900 kB
Anonymous:           900 kB
7f0000200000-7f0000300000 r-xp 00000000 fd:01 99   /usr/lib/x86_64-linux-gnu/libcrypto.so.3
Rss:                3000 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  20 kB
"""


def test_groups_resident_memory_by_mapping() -> None:
    assert procstat.rss_by_mapping(SMAPS) == {"anonymous": 920, "heap": 12000, "files": 3004}


def test_the_groups_of_a_live_process_add_up_to_its_rss() -> None:
    groups = procstat.mapping_kib(os.getpid())
    rss = procstat.status_kib(os.getpid(), "VmRSS")
    assert set(groups) == set(procstat.MAPPING_GROUPS)
    assert all(kib > 0 for kib in groups.values())
    assert abs(sum(groups.values()) - rss) <= rss * 0.05  # read a moment apart: the process may have grown


def test_mapping_change_prints_each_group_in_mib() -> None:
    before = {"anonymous": 1024, "heap": 2048, "files": 512}
    after = {"anonymous": 3072, "heap": 2048, "files": 1024}
    assert procstat.mapping_change(before, after) == "anonymous 1.0 -> 3.0, heap 2.0 -> 2.0, files 0.5 -> 1.0 MiB"
