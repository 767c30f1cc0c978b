"""Small builders of custom-resource dicts for tests: `make_database(service="mempool")`, `make_node(chains=[...])`."""

from __future__ import annotations

import copy
from typing import Any

API_VERSION = "aitbc.io/v1alpha1"


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is _DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


#: Use as a value in overrides to remove a key.
_DELETE = DELETE = _Delete()


def database_spec(**overrides: Any) -> dict[str, Any]:
    """A valid AitbcDatabase spec (camelCase), with overrides merged in."""
    base = {
        "service": "mempool",
        "server": {"adminSecretRef": {"name": "postgres-admin"}, "sslMode": "disable"},
    }
    return _merge(base, overrides)


def make_database(name: str = "mempool", namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    """A whole AitbcDatabase object."""
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": "AitbcDatabase", "metadata": meta, "spec": database_spec(**spec)}


def node_spec(**overrides: Any) -> dict[str, Any]:
    """A valid AitbcNode spec (camelCase), with overrides merged in."""
    base = {
        "chains": ["ait-mainnet", "ait-testnet"],
        "chainId": "ait-mainnet",
        "node": {"image": "ghcr.io/aitbc/blockchain-node:1.0", "port": 8080},
        "rpc": {"image": "ghcr.io/aitbc/blockchain-rpc:1.0", "port": 8006},
        "storage": {"pvc": {"size": "1Gi"}},
    }
    return _merge(base, overrides)


def make_node(name: str = "aitbc1", namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    """A whole AitbcNode object."""
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": "AitbcNode", "metadata": meta, "spec": node_spec(**spec)}
