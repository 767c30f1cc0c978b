"""Thin kopf handlers: parse the resource, call a service, return status. Importing this package registers them."""

from collections.abc import MutableMapping
from typing import Any

from . import common, database, node

__all__ = ["database", "node", "share_registries"]


def share_registries(memo: MutableMapping[str, Any]) -> None:
    """Create the operator-wide registries in the operator's memo, at startup.

    kopf gives every object a shallow copy of that memo: a registry first made later (``setdefault`` in a handler)
    would belong to that one object, and a Secret's or a pod's handler would never see what an AitbcNode's or an
    AitbcDatabase's handler left there.
    """
    common.locks(memo)
    node.rechecks(memo)
    node.mempool_users(memo)
    database.retries(memo)
    database.drift_schedule(memo)
