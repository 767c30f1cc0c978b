"""Day-2 decisions of the real operator on kwok (real apiserver and Job controller; kwok completes Job pods at once,
without a report): a pre-migration backup that leaves no report is a failed one, so the mempool migration is refused
with Degraded/BackupFailed and the node is not rolled; the Jobs carry fixed names and the operator's labels.
What the Jobs do is proven on the real node (tests/e2e/test_chain_ops.py)."""

from __future__ import annotations

import pytest
from kubernetes import client

from aitbc_operator.builders.node_config import ANNOTATION_CONFIG_HASH
from tests.cluster.fixtures import wait_until
from tests.integration.test_node_operator import (
    NODE,
    STEP,
    Api,
    condition,
    create_ready_database,
    create_ready_node,
    mempool_env,
    template_annotations,
    wait_reconciles,
)
from tests.operator_fixtures import OperatorProcess
from tests.pg.fixtures import PgTestServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def api(kube: client.ApiClient, namespace: str) -> Api:
    return Api(kube, namespace)


def test_a_failed_pre_migration_backup_degrades_and_rolls_nothing(
        api: Api, operator: OperatorProcess, pg15: PgTestServer) -> None:
    create_ready_database(api, pg15)
    before = create_ready_node(api)["status"]["configHash"]
    api.patch_node({"mempool": {"databaseRef": {"name": "mempool"}}})

    wait_until(lambda: condition(api.node(), "Degraded") == ("True", "BackupFailed"), STEP, "Degraded/BackupFailed")
    node = api.node()
    message = next(c["message"] for c in node["status"]["conditions"] if c["type"] == "Degraded")
    assert "the backup before the mempool migration failed" in message
    assert "aitbc.io/backup-now" in message, "it says how to try again"
    pre = node["status"]["backup"]["preMigration"]
    assert pre["phase"] == "Failed"
    jobs = client.BatchV1Api(api.kube).list_namespaced_job(api.ns).items
    assert [j.metadata.name for j in jobs] == [f"{NODE}-backup-pm-{pre['targetHash'][:12]}"]
    labels = jobs[0].metadata.labels
    assert (labels["app.kubernetes.io/component"], labels["aitbc.io/trigger"]) == ("backup", "PreMigration")
    assert jobs[0].metadata.owner_references[0].uid == node["metadata"]["uid"]

    wait_reconciles(operator, 2)  # the re-checks go on: nothing rolls, no second Job
    assert template_annotations(api.sts())[ANNOTATION_CONFIG_HASH] == before
    assert mempool_env(api) is None
    assert node["status"]["rollout"]["phase"] == "Held"
    assert len(client.BatchV1Api(api.kube).list_namespaced_job(api.ns).items) == 1
