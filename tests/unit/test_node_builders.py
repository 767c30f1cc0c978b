"""AitbcNode builders beyond the golden files: the config hash, env precedence, mempool wiring, metadata hygiene."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from pydantic import ValidationError

from aitbc_operator.builders.database import CA_KEY, CA_MOUNT_PATH
from aitbc_operator.builders.node import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_NODE_RESTART_MARKER,
    MempoolDatabase,
    chain_env_name,
    chain_pvc,
    config_hash,
    names_of,
    node_children,
    node_configmap,
    node_environment,
    node_statefulset,
    owner_name_problems,
    referenced_secret_names,
    reserved_env_names,
    rpc_deployment,
    shadowed_env_names,
)
from aitbc_operator.models.node import (
    CHAIN_DB_URL_PREFIX,
    ENV_MEMPOOL_DB_URL,
    ENV_REDIS_URL,
    OPERATOR_ENV_NAMES,
    AitbcNodeSpec,
)
from tests.factories import DELETE, make_node, node_spec

MEMPOOL = MempoolDatabase(secret_name="mempool-db")
MEMPOOL_SECRET = {"DATABASE_URL": "cG9zdGdyZXNxbDovL3g6cGFzc3dvcmQxQGgvZA=="}


def owner(name: str = "aitbc1", **spec: Any) -> dict[str, Any]:
    obj = make_node(name, namespace="chain", **spec)
    obj["metadata"]["uid"] = "uid-1"
    return obj


def spec_of(obj: dict[str, Any]) -> AitbcNodeSpec:
    return AitbcNodeSpec.model_validate(obj["spec"])


def spec(**overrides: Any) -> AitbcNodeSpec:
    return AitbcNodeSpec.model_validate(node_spec(**overrides))


def hash_of(s: AitbcNodeSpec, secrets: dict[str, Any] | None = None, mempool: MempoolDatabase | None = None) -> str:
    return config_hash(s, node_environment(s), secrets or {}, mempool=mempool)


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_names(c: dict[str, Any]) -> list[str]:
    return [e["name"] for e in c.get("env", [])]


# --- config hash ---


def test_hash_is_short_hex_and_deterministic() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", hash_of(spec()))
    assert hash_of(spec()) == hash_of(spec())


@pytest.mark.parametrize(
    "overrides",
    [
        {"node": {"resources": {"requests": {"cpu": "2"}}}},
        {"rpc": {"resources": {"limits": {"memory": "4Gi"}}}},
        {"node": {"image": "ghcr.io/aitbc/blockchain-node:2.0"}},
        {"rpc": {"readinessPath": "/rpc/health"}},
        {"storage": {"pvc": {"size": "500Gi"}}},
        {"storage": {"pvc": {"retainOnDelete": False}}},
        {"placement": {"nodeSelector": {"disk": "ssd"}}},
        {"rolloutTimeout": "1h"},
        {"volumePrep": {"privileged": False}},
    ],
)
def test_unrelated_fields_do_not_change_the_hash(overrides: dict[str, Any]) -> None:
    assert hash_of(spec(**overrides)) == hash_of(spec())


@pytest.mark.parametrize(
    "overrides",
    [
        {"chains": ["ait-mainnet"]},
        {"chains": ["ait-mainnet", "ait-testnet", "ait-devnet"]},
        {"chainId": "ait-testnet"},
        {"dataDir": "/srv/aitbc"},
        {"redisUrl": "redis://redis:6379"},
        {"storage": {"disableCow": False}},
        {"storage": {"requireNoCow": True}},
        {"storage": {"pvc": {"storageClassName": "fast"}}},
    ],
)
def test_database_related_fields_change_the_hash(overrides: dict[str, Any]) -> None:
    assert hash_of(spec(**overrides)) != hash_of(spec())


def test_secret_content_changes_the_hash_but_never_appears_in_it() -> None:
    s = spec(mempool={"databaseRef": {"name": "mempool"}})
    before = hash_of(s, {"mempool-db": MEMPOOL_SECRET}, MEMPOOL)
    rotated = hash_of(s, {"mempool-db": {"DATABASE_URL": "cG9zdGdyZXNxbDovL3g6cGFzc3dvcmQyQGgvZA=="}}, MEMPOOL)
    assert before != rotated
    assert hash_of(s, {"mempool-db": MEMPOOL_SECRET}, MEMPOOL) == before
    assert hash_of(s, {"mempool-db": {k: v.encode() for k, v in MEMPOOL_SECRET.items()}}, MEMPOOL) == before


def test_missing_referenced_secret_hashes_differently_from_present() -> None:
    s = spec(mempool={"databaseRef": {"name": "mempool"}})
    assert hash_of(s, {}, MEMPOOL) != hash_of(s, {"mempool-db": MEMPOOL_SECRET}, MEMPOOL)


def test_unreferenced_secrets_are_ignored() -> None:
    s = spec()
    assert hash_of(s, {"someone-else": {"k": "dg=="}}) == hash_of(s)


def test_mempool_reference_added_and_removed_changes_the_hash_and_back() -> None:
    sqlite = hash_of(spec())
    postgres = hash_of(spec(mempool={"databaseRef": {"name": "mempool"}}), {"mempool-db": MEMPOOL_SECRET}, MEMPOOL)
    assert postgres != sqlite
    assert hash_of(spec()) == sqlite  # removing the reference is the rollback: back to the SQLite configuration


def test_env_secret_references_are_hashed() -> None:
    s = spec(node={"env": [{"name": "P2P_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "p2p"}}}]})
    assert referenced_secret_names(s, MEMPOOL) == ["keys", "mempool-db"]
    assert hash_of(s, {"keys": {"p2p": "YQ=="}}) != hash_of(s, {"keys": {"p2p": "Yg=="}})


# --- environment ---


def test_environment_holds_per_chain_sqlite_urls_and_no_database_url() -> None:
    env = node_environment(spec(chains=["ait-mainnet", "ait-testnet"], chainId="ait-testnet"))
    assert env["CHAIN_ID"] == "ait-testnet"
    assert env["CHAINS"] == "ait-mainnet,ait-testnet"
    assert env["CHAIN_DB_URL"] == "sqlite:////var/lib/aitbc/data/ait-testnet/chain.db"
    assert env["CHAIN_DB_URL_AIT_MAINNET"] == "sqlite:////var/lib/aitbc/data/ait-mainnet/chain.db"
    assert "DATABASE_URL" not in env
    assert "MEMPOOL_DB_URL" not in env
    assert "REDIS_URL" not in env


def test_chain_env_name() -> None:
    assert chain_env_name("ait-main-net2") == "CHAIN_DB_URL_AIT_MAIN_NET2"


def test_user_env_cannot_override_operator_values() -> None:
    obj = owner(
        redisUrl="redis://redis:6379",
        mempool={"databaseRef": {"name": "mempool"}},
        node={"env": [{"name": "DATA_DIR", "value": "/x"}, {"name": "REDIS_URL", "value": "redis://other:1"},
                      {"name": "MEMPOOL_DB_URL", "value": "sqlite:///m.db"}, {"name": "KEEP", "value": "1"}]},
        rpc={"env": [{"name": "CHAIN_ID", "value": "ait-devnet"}, {"name": "CHAIN_DB_URL_AIT_MAINNET", "value": "x"}]},
    )
    s = spec_of(obj)
    sts = node_statefulset(obj, s, config_hash="h", operator_image="img", mempool=MEMPOOL)
    dep = rpc_deployment(obj, s, config_hash="h", node_restart_marker="m", mempool=MEMPOOL)
    node_env = container(sts, "node")["env"]
    assert [e["name"] for e in node_env] == ["KEEP", "MEMPOOL_DB_URL"]
    assert node_env[1] == {"name": "MEMPOOL_DB_URL",
                           "valueFrom": {"secretKeyRef": {"name": "mempool-db", "key": "DATABASE_URL"}}}
    assert "env" not in container(dep, "rpc")
    assert shadowed_env_names(s, MEMPOOL) == [
        "CHAIN_DB_URL_AIT_MAINNET", "CHAIN_ID", "DATA_DIR", "MEMPOOL_DB_URL", "REDIS_URL"]


@pytest.mark.parametrize("extra", [{}, {"redisUrl": "redis://r:6379"}, {"mempool": {"databaseRef": {"name": "m"}}}])
def test_the_crd_rule_refuses_exactly_the_names_the_builders_reserve(extra: dict[str, Any]) -> None:
    """The CEL rule on node.env/rpc.env (models/node.py) lists the names the builders would drop, no more, no less."""
    s = spec(chains=["ait-mainnet", "ait-dev-2"], **extra)
    mempool = MEMPOOL if s.mempool.database_ref else None
    refused = {*OPERATOR_ENV_NAMES, *(CHAIN_DB_URL_PREFIX + c.upper().replace("-", "_") for c in s.chains)}
    refused |= {ENV_REDIS_URL} if s.redis_url else set()
    refused |= {ENV_MEMPOOL_DB_URL} if mempool else set()
    assert reserved_env_names(s, mempool) == refused


def test_database_url_never_reaches_the_node_even_from_a_secret() -> None:
    """A literal PostgreSQL DATABASE_URL is refused by the model; one from a Secret is dropped by the builder."""
    ref = {"secretKeyRef": {"name": "pg", "key": "url"}}
    obj = owner(node={"env": [{"name": "DATABASE_URL", "valueFrom": ref}]})
    s = spec_of(obj)
    sts = node_statefulset(obj, s, config_hash="h", operator_image="img")
    assert "DATABASE_URL" not in env_names(container(sts, "node"))
    assert "DATABASE_URL" not in node_configmap(obj, s)["data"]
    assert shadowed_env_names(s, None) == ["DATABASE_URL"]


def test_user_may_provide_redis_url_when_the_spec_does_not() -> None:
    ref = {"secretKeyRef": {"name": "redis", "key": "url"}}
    obj = owner(node={"env": [{"name": "REDIS_URL", "valueFrom": ref}]})
    sts = node_statefulset(obj, spec_of(obj), config_hash="h", operator_image="img")
    assert container(sts, "node")["env"] == [{"name": "REDIS_URL", "valueFrom": ref}]


def test_mempool_without_reference_stays_sqlite() -> None:
    obj = owner()
    sts = node_statefulset(obj, spec_of(obj), config_hash="h", operator_image="img")
    assert "MEMPOOL_DB_URL" not in env_names(container(sts, "node"))
    assert "MEMPOOL_DB_URL" not in node_configmap(obj, spec_of(obj))["data"]


def test_mempool_secret_must_match_the_reference() -> None:
    obj = owner()
    with pytest.raises(ValueError, match="databaseRef"):
        node_statefulset(obj, spec_of(obj), config_hash="h", operator_image="img", mempool=MEMPOOL)
    with_ref = owner(mempool={"databaseRef": {"name": "mempool"}})
    with pytest.raises(ValueError, match="databaseRef"):
        node_statefulset(with_ref, spec_of(with_ref), config_hash="h", operator_image="img")


def test_the_rpc_never_gets_the_mempool_url() -> None:
    obj = owner(mempool={"databaseRef": {"name": "mempool"}})
    dep = rpc_deployment(obj, spec_of(obj), config_hash="h", node_restart_marker="m", mempool=MEMPOOL)
    assert "MEMPOOL_DB_URL" not in env_names(container(dep, "rpc"))


@pytest.mark.parametrize("name", ["DATABASE_URL", "CHAIN_DB_URL"])
@pytest.mark.parametrize("url", ["postgresql+psycopg://u:p@h/d", "postgres://u:p@h/d", "POSTGRESQL://h/d"])
def test_postgres_url_for_chain_data_is_refused(name: str, url: str) -> None:
    with pytest.raises(ValidationError, match="always SQLite"):
        spec(node={"env": [{"name": name, "value": url}]})


# --- workloads ---


def test_hash_and_marker_are_stamped_on_pod_templates_only() -> None:
    obj = owner()
    s = spec_of(obj)
    sts = node_statefulset(obj, s, config_hash="n1", operator_image="img")
    dep = rpc_deployment(obj, s, config_hash="r1", node_restart_marker="uid/3")
    assert sts["spec"]["template"]["metadata"]["annotations"] == {ANNOTATION_CONFIG_HASH: "n1"}
    assert dep["spec"]["template"]["metadata"]["annotations"] == {
        ANNOTATION_CONFIG_HASH: "r1", ANNOTATION_NODE_RESTART_MARKER: "uid/3"}
    assert ANNOTATION_CONFIG_HASH not in sts["metadata"].get("annotations", {})


def test_owner_labels_reach_objects_but_not_pod_templates() -> None:
    plain = owner()
    labelled = owner()
    labelled["metadata"]["labels"] = {
        "team": "a", "argocd.argoproj.io/instance": "x", "app.kubernetes.io/instance": "y"}
    labelled["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                           "kopf.zalando.org/x": "1", "aitbc.io/refresh": "1", "note": "n"}
    s = spec_of(plain)
    a = node_statefulset(plain, s, config_hash="h", operator_image="img")
    b = node_statefulset(labelled, s, config_hash="h", operator_image="img")
    assert a["spec"]["template"] == b["spec"]["template"]  # a label edit never restarts the node
    assert b["metadata"]["labels"]["team"] == "a"
    assert not any(k.startswith("argocd") or k == "app.kubernetes.io/instance" for k in b["metadata"]["labels"])
    assert b["metadata"]["annotations"] == {"note": "n"}


def test_every_child_is_named_explicitly_and_owned() -> None:
    obj = owner(storage={"pvc": {"retainOnDelete": False}})
    children = node_children(obj, spec_of(obj), node_hash="h", rpc_hash="h", node_restart_marker="m",
                             operator_image="img")
    names = names_of(obj)
    got = {(m["kind"], m["metadata"]["name"]) for m in children.in_apply_order()}
    assert got == {
        ("PersistentVolumeClaim", names.pvc), ("ConfigMap", "aitbc1-config"), ("ConfigMap", "aitbc1-rpc-config"),
        ("Service", "aitbc1-node"), ("Service", "aitbc1-rpc"), ("StatefulSet", "aitbc1-node"),
        ("Deployment", "aitbc1-rpc"),
    }
    for manifest in children.in_apply_order():
        assert "generateName" not in manifest["metadata"]
        assert manifest["metadata"]["namespace"] == "chain"
        assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert children.in_apply_order()[-1]["kind"] == "Deployment"


def test_retained_pvc_has_no_owner_reference() -> None:
    obj = owner()
    pvc = chain_pvc(obj, spec_of(obj))
    assert pvc is not None
    assert "ownerReferences" not in pvc["metadata"]
    assert pvc["metadata"]["annotations"]["aitbc.io/retained-from-uid"] == "uid-1"
    assert chain_pvc(obj, spec(storage={"pvc": DELETE, "hostPath": {"nodeName": "w1"}})) is None


def test_rpc_requires_the_node_pods_host_and_mounts_the_volume_read_write() -> None:
    obj = owner()
    dep = rpc_deployment(obj, spec_of(obj), config_hash="h", node_restart_marker="m")
    term = dep["spec"]["template"]["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    sts = node_statefulset(obj, spec_of(obj), config_hash="h", operator_image="img")
    assert term[0]["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert term[0]["topologyKey"] == "kubernetes.io/hostname"
    mount = container(dep, "rpc")["volumeMounts"][0]
    assert mount["mountPath"] == "/var/lib/aitbc"
    assert not mount.get("readOnly", False)
    assert dep["spec"]["strategy"] == {"type": "Recreate"}


def test_operator_image_is_used_unless_overridden() -> None:
    obj = owner()
    sts = node_statefulset(obj, spec_of(obj), config_hash="h", operator_image="op:1")
    assert sts["spec"]["template"]["spec"]["initContainers"][0]["image"] == "op:1"
    other = owner(volumePrep={"image": "mirror/op:1"})
    sts = node_statefulset(other, spec_of(other), config_hash="h", operator_image="op:1")
    assert sts["spec"]["template"]["spec"]["initContainers"][0]["image"] == "mirror/op:1"


@pytest.mark.parametrize(
    ("name", "ok"),
    [("aitbc1", True), ("a" * 47, True), ("a" * 48, False), ("1node", False), ("node.one", False)],
)
def test_owner_name_problems(name: str, ok: bool) -> None:
    assert (owner_name_problems(name) == []) is ok


def test_rpc_is_probed_by_service_ip_not_dns_name() -> None:
    """The heights come from the RPC Service's ClusterIP: no cluster DNS needed (the local real node runs none)."""
    from aitbc_operator.reconcilers.node import rpc_base_url

    assert rpc_base_url({"spec": {"clusterIP": "10.96.12.7"}}, 8006) == "http://10.96.12.7:8006"
    assert rpc_base_url({"spec": {"clusterIP": "fd00::7"}}, 8006) == "http://[fd00::7]:8006"
    assert rpc_base_url({"spec": {"clusterIP": "None"}}, 8006) is None  # headless
    assert rpc_base_url({"spec": {}}, 8006) is None  # not allocated yet
    assert rpc_base_url(None, 8006) is None


def test_a_mempool_secret_with_a_ca_is_mounted_where_its_url_names_sslrootcert() -> None:
    obj = owner(mempool={"databaseRef": {"name": "mempool"}})
    plain = node_statefulset(obj, spec_of(obj), config_hash="h", operator_image="img", mempool=MEMPOOL)
    assert all(v["name"] != "postgres-ca" for v in plain["spec"]["template"]["spec"]["volumes"])
    sts = node_statefulset(obj, spec_of(obj), config_hash="h", operator_image="img",
                           mempool=dataclasses.replace(MEMPOOL, ca=True))
    volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "postgres-ca")
    assert volume["secret"] == {"secretName": "mempool-db", "items": [{"key": CA_KEY, "path": CA_KEY}]}
    mount = next(m for m in container(sts, "node")["volumeMounts"] if m["name"] == "postgres-ca")
    assert f"{mount['mountPath']}/{CA_KEY}" == CA_MOUNT_PATH
    assert mount["readOnly"] is True
