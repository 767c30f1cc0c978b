"""Failure isolation: one PostgreSQL server is dead in the worst way - its port accepts connections and never answers
(tests/pg/blackhole.py), so every connection attempt costs the whole connect timeout - and 50 AitbcDatabases use it,
next to 50 on a healthy PostgreSQL 15. The real operator (20 handler slots) must bring the healthy 50 to Ready and
report the 50 as Degraded/ServerUnreachable, both within deadlines far below what serial connect timeouts would take
(50 x 5 s), and try the dead server only a few times (its circuit breaker). How fast, compared with no dead server,
is a benchmark: benchmarks/db_isolation_bench.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client

from tests.cluster.fixtures import wait_until
from tests.integration.test_database_operator import DbEnv, database, make_env
from tests.operator_fixtures import OperatorProcess
from tests.pg.blackhole import Blackhole
from tests.pg.fixtures import PgTestServer

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(400)]

COUNT = 50


@pytest.fixture
def env(kube: client.ApiClient, namespace: str, pg15: PgTestServer, operator: OperatorProcess,
        names: str) -> Iterator[DbEnv]:
    yield from make_env(kube, namespace, pg15.server, pg15.admin_login, operator, names)


def conditions_by_name(env: DbEnv) -> dict[str, dict[str, tuple[str, str]]]:
    """name -> {condition type: (status, reason)} of every AitbcDatabase in the namespace."""
    found = env.crs.list_namespaced_custom_object("aitbc.io", "v1alpha1", env.namespace, "aitbcdatabases")
    return {obj["metadata"]["name"]: {c["type"]: (c["status"], c["reason"])
                                      for c in (obj.get("status") or {}).get("conditions", [])}
            for obj in found["items"]}


def count(env: DbEnv, prefix: str, type_: str, status: str, reason: str) -> int:
    return sum(1 for name, conds in conditions_by_name(env).items()
               if name.startswith(prefix) and conds.get(type_) == (status, reason))


def test_a_blackholed_server_does_not_hold_up_a_healthy_one(env: DbEnv, names: str) -> None:
    with Blackhole() as hole:
        env.core.create_namespaced_secret(env.namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="dead-admin"),
            string_data={"host": hole.host, "port": str(hole.port), "username": "admin", "password": "unused"}))
        objects = []
        for i in range(COUNT):  # interleaved, as they would arrive from two teams
            objects.append(database(f"dead{i}", names, server={"adminSecretRef": {"name": "dead-admin"}}))
            objects.append(database(f"live{i}", names))
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(env.create, objects))

        wait_until(lambda: count(env, "live", "Ready", "True", "Reconciled") == COUNT, 120,
                   "the 50 on the healthy server Ready")
        wait_until(lambda: count(env, "dead", "Degraded", "True", "ServerUnreachable") == COUNT, 60,
                   "the 50 on the dead server Degraded/ServerUnreachable")
        elapsed = time.monotonic() - started
        # One attempt per breaker cool-down (10 s), not one per resource and retry.
        assert hole.accepted <= 2 + elapsed / 10, f"{hole.accepted} connections to the dead server in {elapsed:.0f} s"
        message = env.message("dead0", "Degraded")
        assert f"{hole.host}:{hole.port}" in message
        assert "cannot connect" in message
