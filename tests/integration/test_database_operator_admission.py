"""Hostile database and role names never reach the operator: the apiserver refuses them at admission.

tests/integration/test_crds_apiserver.py already checks one value per schema constraint and CEL rule (a space,
64 bytes, `template1`, `public`, a `pg_` prefix); these are the SQL-injection-shaped and look-alike values it does not
try, plus every other reserved name. Server-side dry run: nothing is stored.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.factories import make_database

pytestmark = pytest.mark.cluster

HOSTILE = {
    "double-quote": 'aitbc"x',
    "quote-injection": 'x"; DROP DATABASE postgres; --',
    "single-quote": "aitbc'x",
    "semicolon": "aitbc;drop_role",
    "comment": "aitbc--x",
    "tab": "aitbc\tx",
    "newline": "aitbc\nx",
    "nul": "aitbc\x00x",
    "dollar": "aitbc$x",
    "upper-case": "Aitbc_mempool",
    "latin-accent": "données",
    "cyrillic-lookalike": "\u0430itbc_mempool",  # Cyrillic small a: looks like aitbc_mempool
    "64-bytes-in-32-characters": "é" * 32,
    "emoji": "a" * 59 + "\U0001f600",
    "leading-digit": "1aitbc",
}
RESERVED = {
    "databaseName": ("postgres", "template0", "pg_anything"),
    "roleName": ("postgres", "none", "current_user", "session_user", "current_role", "pg_monitor"),
}
CASES = [(field, value) for field in ("databaseName", "roleName") for value in HOSTILE.values()] + [
    (field, value) for field, values in RESERVED.items() for value in values
]
IDS = [f"{field}-{key}" for field in ("databaseName", "roleName") for key in HOSTILE] + [
    f"{field}-{value}" for field, values in RESERVED.items() for value in values
]


@pytest.mark.parametrize(("field", "value"), CASES, ids=IDS)
def test_hostile_name_is_rejected_at_admission(kube: client.ApiClient, namespace: str, field: str,
                                               value: str) -> None:
    obj = make_database("hostile", **{field: value})
    with pytest.raises(ApiException) as info:
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            "aitbc.io", "v1alpha1", namespace, "aitbcdatabases", obj, dry_run="All")
    assert info.value.status == 422, info.value.body
    causes = json.loads(info.value.body or "{}")["details"]["causes"]
    assert any(c.get("field") == f"spec.{field}" for c in causes), causes
