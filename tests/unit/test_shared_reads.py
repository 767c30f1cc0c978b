"""SecretReads: one GET of an admin Secret answers the reconciles of a moment (single flight), and no longer; a
failed read is not kept."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from aitbc_operator import errors
from aitbc_operator.k8s.client import Kube
from aitbc_operator.reconcilers.shared_reads import SecretReads


class ReadingKube:
    """Secrets whose reads can be held open (``gate``) so that callers overlap."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {("ns", "admin"): {"password": "one"}}
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.reads += 1
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        found = self.data.get((namespace, name))
        return dict(found) if found is not None else None


def test_concurrent_and_recent_callers_share_one_read_later_ones_read_again() -> None:
    kube, clock = ReadingKube(), [100.0]
    reads = SecretReads(cast(Kube, kube), max_age=2.0, clock=lambda: clock[0])

    async def main() -> None:
        kube.gate.clear()
        waiting = [asyncio.ensure_future(reads.read("ns", "admin")) for _ in range(20)]
        await asyncio.sleep(0)
        kube.gate.set()
        assert [await w for w in waiting] == [{"password": "one"}] * 20
        clock[0] += 1.5
        assert await reads.read("ns", "admin") == {"password": "one"}
        assert await reads.read("ns", "absent") is None
        assert kube.reads == 2  # one for the 21 callers of "admin", one for "absent"
        kube.data[("ns", "admin")] = {"password": "two"}
        clock[0] += 1.0  # 2.5 s after the first read: too old
        assert await reads.read("ns", "admin") == {"password": "two"}
        assert kube.reads == 3

    asyncio.run(main())


def test_a_failed_read_is_not_kept() -> None:
    kube = ReadingKube()
    reads = SecretReads(cast(Kube, kube), max_age=60.0)

    async def main() -> None:
        kube.fail = errors.ApiUnavailable("apiserver down")
        with pytest.raises(errors.ApiUnavailable):
            await reads.read("ns", "admin")
        kube.fail = None
        assert await reads.read("ns", "admin") == {"password": "one"}
        assert kube.reads == 2

    asyncio.run(main())
