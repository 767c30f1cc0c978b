"""The generated CRDs, served by a real kube-apiserver: samples apply, and every rule rejects what it should.

Three kinds of checks, one test each:
- every sample in crds/samples/ applies and reads back with its spec intact;
- every CEL rule (x-kubernetes-validations) rejects a bad object with its own message; transition rules
  (immutability, no shrinking) through an update of a valid object. The cases are listed by hand in RULE_CASES, and
  `test_every_cel_rule_has_a_case` fails when a rule in crds/ has no case (or a case no rule);
- every schema constraint (enum, pattern, min/maxLength, minimum/maximum, min/maxItems, required) found by walking
  the CRD schemas rejects a value derived from the constraint, with the apiserver's message for that constraint.
Creates use server-side dry run: the apiserver validates fully but stores nothing.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from localcluster.cluster import crd_files

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted(p for p in (ROOT / "crds" / "samples").glob("*.yaml") if p.name != "kustomization.yaml")
GROUP, VERSION = "aitbc.io", "v1alpha1"
PLURALS = {"AitbcDatabase": "aitbcdatabases", "AitbcNode": "aitbcnodes"}
BASE_SAMPLES = {"AitbcDatabase": "aitbcdatabase-mempool.yaml", "AitbcNode": "aitbcnode-main.yaml"}

Obj = dict[str, Any]
Mutation = Callable[[Obj], None]


def load_crds() -> dict[str, Obj]:
    """Kind -> CRD manifest, from crds/."""
    crds = (yaml.safe_load(p.read_text()) for p in crd_files())
    return {crd["spec"]["names"]["kind"]: crd for crd in crds}


def root_schema(crd: Obj) -> Obj:
    """The openAPIV3Schema of the (single) served version."""
    schema: Obj = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def base_object(kind: str, name: str | None = None) -> Obj:
    """A valid object of `kind`: its sample, optionally renamed."""
    obj: Obj = yaml.safe_load((ROOT / "crds" / "samples" / BASE_SAMPLES[kind]).read_text())
    if name:
        obj["metadata"]["name"] = name
    return obj


# --- talking to the apiserver ---------------------------------------------------------------------------------------

def create(kube: client.ApiClient, namespace: str, obj: Obj, *, dry_run: bool = True) -> Obj:
    """Create `obj` (server-side dry run by default)."""
    api = client.CustomObjectsApi(kube)
    kwargs = {"dry_run": "All"} if dry_run else {}
    created: Obj = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[obj["kind"]], obj, **kwargs
    )
    return created


def replace(kube: client.ApiClient, namespace: str, obj: Obj) -> Obj:
    """Replace (PUT) `obj` with server-side dry run; `obj` carries the resourceVersion it was read with."""
    api = client.CustomObjectsApi(kube)
    replaced: Obj = api.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[obj["kind"]], obj["metadata"]["name"], obj, dry_run="All"
    )
    return replaced


def rejection(call: Callable[[], object]) -> Obj:
    """Run a create/replace that must be refused as invalid; return the apiserver's Status."""
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 422, f"expected 422 Invalid, got {info.value.status}: {info.value.body}"
    status: Obj = json.loads(info.value.body)
    return status


def assert_cause(status: Obj, message: str, field: str | None) -> None:
    """The Status lists a cause with `message` (at `field`, when given)."""
    causes = status.get("details", {}).get("causes", [])
    found = [c for c in causes if message in c.get("message", "") and (field is None or c.get("field") == field)]
    where = f" at {field}" if field else ""
    assert found, f"no cause {message!r}{where} in: {json.dumps(causes, indent=1)}"


# --- samples ----------------------------------------------------------------------------------------------------------

def is_subset(expected: Any, actual: Any) -> bool:
    """Every value of `expected` is in `actual` (extra keys in `actual`, e.g. defaults, are fine)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and is_subset(v, actual[k]) for k, v in expected.items())
    return bool(expected == actual)


@pytest.mark.cluster
@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_sample_applies_and_reads_back(k8s_cluster: Any, kube: client.ApiClient, namespace: str, sample: Path) -> None:
    obj = yaml.safe_load(sample.read_text())
    k8s_cluster.kubectl("apply", "-n", namespace, "-f", str(sample))
    api = client.CustomObjectsApi(kube)
    stored = api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[obj["kind"]], obj["metadata"]["name"]
    )
    assert stored["metadata"]["uid"]
    assert is_subset(obj["spec"], stored["spec"]), f"spec changed on the way:\n{obj['spec']}\n{stored['spec']}"


@pytest.mark.cluster
def test_samples_kustomization_applies(k8s_cluster: Any, namespace: str) -> None:
    """crds/samples/kustomization.yaml lists every sample and applies as a whole."""
    listed = yaml.safe_load((ROOT / "crds" / "samples" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == [p.name for p in SAMPLES]
    out = k8s_cluster.kubectl("apply", "-n", namespace, "-k", str(ROOT / "crds" / "samples")).stdout
    assert out.count("created") + out.count("unchanged") == len(SAMPLES), out


# --- CEL rules --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleCase:
    """A bad object for one CEL rule: `bad` mutates a valid object; with `before`, it is an update of one."""

    kind: str
    message: str
    bad: Mutation
    field: str | None = None
    before: Mutation | None = None
    name: str | None = None


def setter(path: str, value: Any) -> Mutation:
    """A mutation setting a dotted path under the object (creating dicts on the way)."""

    def apply(obj: Obj) -> None:
        *parents, last = path.split(".")
        node = obj
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return apply


def both(*mutations: Mutation) -> Mutation:
    """Apply several mutations in order."""

    def apply(obj: Obj) -> None:
        for mutation in mutations:
            mutation(obj)

    return apply


def drop(path: str) -> Mutation:
    """A mutation deleting a dotted path."""

    def apply(obj: Obj) -> None:
        *parents, last = path.split(".")
        node = obj
        for part in parents:
            node = node[part]
        del node[last]

    return apply


def crd_rule_messages() -> set[tuple[str, str]]:
    """(kind, message) of every x-kubernetes-validations rule in crds/."""
    found: set[tuple[str, str]] = set()

    def walk(kind: str, schema: Obj) -> None:
        found.update((kind, rule["message"]) for rule in schema.get("x-kubernetes-validations", []))
        for child in schema.get("properties", {}).values():
            walk(kind, child)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                walk(kind, schema[key])

    for kind, crd in load_crds().items():
        walk(kind, root_schema(crd))
    return found


def node_name_rule() -> tuple[str, int]:
    """The AitbcNode name rule's message and the length limit it states (the limit is tuned in the model)."""
    message = next((m for k, m in crd_rule_messages() if k == "AitbcNode" and m.startswith("metadata.name")), "")
    limit = re.search(r"at most (\d+) characters", message)
    return message, int(limit.group(1)) if limit else 0


def unchanged(obj: Obj) -> None:
    """No mutation (the object itself is the bad one, or an update case starts from the sample as it is)."""


PG_URL_MESSAGE = (
    "chain data are always SQLite: a PostgreSQL URL is not allowed in DATABASE_URL/CHAIN_DB_URL "
    "(use mempool.databaseRef for the mempool)"
)
NODE_NAME_RULE, NODE_NAME_LIMIT = node_name_rule()
IMAGE_MESSAGE = (
    "must be a container image reference, [registry[:port]/]path[:tag][@digest] (lower-case path; no spaces, newlines"
    " or upper-case letters in it)"
)
TEMPLATE_MESSAGE = ("templates may only use {{ .VAR }} or {{ .VAR | FILTER }} with VAR one of user, password, host,"
                    " port, database, sslmode and FILTER one of urlescape, pgpass; no other { or } characters")
RESERVED_KEYS_MESSAGE = (
    "template keys must not be keys the operator writes: DATABASE_URL, EXCHANGE_DATABASE_URL, MARKETPLACE_DATABASE_URL,"
    " MEMPOOL_DB_URL, WALLET_DATABASE_URL, DATABASE_ADAPTER, uri, host, port, database, username, password, sslmode,"
    " sslrootcert, ca.crt"
)
PATH_MESSAGE = "must be an absolute, normalised path: no '.' or '..' segments, no '//', no trailing '/'"
FORBIDDEN_MESSAGE = (
    "must not be /, nor be, lie under or contain /etc, /proc, /sys, /dev, /var/run, /run, /root, /boot, /usr"
)


def reserved_env_message(container: str) -> str:
    return (f"{container}.env must not set a variable the operator sets: DATA_DIR, CHAIN_ID, CHAINS, CHAIN_DB_URL,"
            " DATABASE_URL, CHAIN_DB_URL_<CHAIN> of each chain, REDIS_URL (with redisUrl), MEMPOOL_DB_URL (with"
            " mempool.databaseRef)")


def host_path(path: str) -> Mutation:
    """hostPath storage at `path` on worker-1 instead of the sample's PVC."""
    return both(drop("spec.storage.pvc"), setter("spec.storage.hostPath", {"path": path, "nodeName": "worker-1"}))

BOTH_VALUES = {"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
DB, NODE = "AitbcDatabase", "AitbcNode"
RULE_CASES: dict[str, RuleCase] = {
    "db-service-immutable": RuleCase(DB, "service is immutable", setter("spec.service", "wallet"), "spec.service",
                                     before=unchanged),
    "db-databaseName-immutable": RuleCase(
        DB, "databaseName is immutable", setter("spec.databaseName", "aitbc_other"), "spec.databaseName",
        before=setter("spec.databaseName", "aitbc_first"),
    ),
    "db-roleName-immutable": RuleCase(
        DB, "roleName is immutable", setter("spec.roleName", "aitbc_other"), "spec.roleName",
        before=setter("spec.roleName", "aitbc_first"),
    ),
    "db-secret-name-immutable": RuleCase(
        DB, "secret.name is immutable", setter("spec.secret.name", "other-db"), "spec.secret.name",
        before=setter("spec.secret.name", "first-db"),
    ),
    "db-databaseName-reserved": RuleCase(
        DB, "databaseName must not be a name reserved by PostgreSQL (postgres, template0, template1)",
        setter("spec.databaseName", "template1"), "spec.databaseName",
    ),
    "db-databaseName-pg-prefix": RuleCase(
        DB, "databaseName must not start with 'pg_' (reserved by PostgreSQL)",
        setter("spec.databaseName", "pg_chain"), "spec.databaseName",
    ),
    "db-roleName-reserved": RuleCase(
        DB, "roleName must not be a name reserved by PostgreSQL (postgres, public, none, current_user, session_user, "
        "current_role)", setter("spec.roleName", "public"), "spec.roleName",
    ),
    "db-roleName-pg-prefix": RuleCase(
        DB, "roleName must not start with 'pg_' (reserved by PostgreSQL)", setter("spec.roleName", "pg_admin"),
        "spec.roleName",
    ),
    "db-caSecretRef-for-verify": RuleCase(
        DB, "caSecretRef is required when sslMode is verify-ca or verify-full",
        setter("spec.server.sslMode", "verify-full"), "spec.server.caSecretRef",
    ),
    # day-2 (issue 15)
    "db-templates-grammar": RuleCase(
        DB, TEMPLATE_MESSAGE, setter("spec.secret.templates", {"X": "postgres://{{ .password | base64 }}@h"}),
        "spec.secret.templates",
    ),
    "db-templates-grammar-stray-brace": RuleCase(
        DB, TEMPLATE_MESSAGE, setter("spec.secret.templates", {"X": "{{ .user }}:{{ .passwd }}"}),
        "spec.secret.templates",
    ),
    "db-templates-key": RuleCase(
        DB, "template keys must be Secret keys: letters, digits, '-', '_' and '.', at most 253",
        setter("spec.secret.templates", {"bad key": "{{ .user }}"}), "spec.secret.templates",
    ),
    "db-templates-reserved-key": RuleCase(
        DB, RESERVED_KEYS_MESSAGE, setter("spec.secret.templates", {"password": "{{ .password }}"}),
        "spec.secret.templates",
    ),
    "db-consumer-name-xor-selector": RuleCase(
        DB, "set exactly one of name or selector",
        setter("spec.consumers", [{"kind": "Deployment", "name": "x", "selector": {"matchLabels": {"a": "b"}}}]),
        "spec.consumers[0]",
    ),
    "db-consumer-neither": RuleCase(
        DB, "set exactly one of name or selector", setter("spec.consumers", [{"kind": "StatefulSet"}]),
        "spec.consumers[0]",
    ),
    "db-backup-image": RuleCase(
        DB, f"backup.image {IMAGE_MESSAGE}",
        setter("spec.backup", {"schedule": "@daily", "claimName": "dumps", "image": "postgres:15 latest"}),
        "spec.backup.image",
    ),
    "db-extensions-unique": RuleCase(
        DB, "extension names must be unique", setter("spec.extensions", [{"name": "citext"}, {"name": "citext"}]),
        "spec.extensions",
    ),
    "db-schemas-unique": RuleCase(
        DB, "schema names must be unique", setter("spec.schemas", [{"name": "app"}, {"name": "app"}]),
        "spec.schemas",
    ),
    "db-schema-reserved": RuleCase(
        DB, "schema name must not be a name reserved by PostgreSQL (public, information_schema)",
        setter("spec.schemas", [{"name": "public"}]), "spec.schemas[0].name",
    ),
    "db-schema-pg-prefix": RuleCase(
        DB, "schema name must not start with 'pg_' (reserved by PostgreSQL)",
        setter("spec.schemas", [{"name": "pg_catalog"}]), "spec.schemas[0].name",
    ),
    "db-readOnly-roleName-reserved": RuleCase(
        DB, "readOnly.roleName must not be a name reserved by PostgreSQL (postgres, public, none, current_user, "
        "session_user, current_role)", setter("spec.readOnly", {"enabled": True, "roleName": "public"}),
        "spec.readOnly.roleName",
    ),
    "db-readOnly-roleName-pg-prefix": RuleCase(
        DB, "readOnly.roleName must not start with 'pg_' (reserved by PostgreSQL)",
        setter("spec.readOnly", {"enabled": True, "roleName": "pg_read_all_data"}), "spec.readOnly.roleName",
    ),
    "db-rotationStrategy-immutable": RuleCase(
        DB, "password.rotationStrategy is immutable (it decides which roles exist)",
        setter("spec.password", {"rotationStrategy": "AlternatingRoles"}), "spec.password.rotationStrategy",
        before=unchanged,
    ),
    "db-alternating-roleName-length": RuleCase(
        DB, "roleName must be at most 61 characters with AlternatingRoles (the logins are <roleName>_a and _b)",
        both(setter("spec.password", {"rotationStrategy": "AlternatingRoles"}), setter("spec.roleName", "r" * 62)),
        "spec.roleName",
    ),
    "db-readOnly-roleName-immutable": RuleCase(
        DB, "readOnly.roleName is immutable", setter("spec.readOnly", {"enabled": True, "roleName": "other_ro"}),
        "spec.readOnly.roleName", before=setter("spec.readOnly", {"enabled": True, "roleName": "first_ro"}),
    ),
    "db-readOnly-secretName-immutable": RuleCase(
        DB, "readOnly.secretName is immutable", setter("spec.readOnly", {"enabled": True, "secretName": "other"}),
        "spec.readOnly.secretName", before=setter("spec.readOnly", {"enabled": True, "secretName": "first"}),
    ),
    "db-restore-needs-backup": RuleCase(
        DB, "restore needs backup (the volume holding the dumps)",
        setter("spec.restore", {"name": "r1", "file": "aitbc_mempool-20261201T030000Z.dump"}), "spec.restore",
    ),
    "node-name-dns1035": RuleCase(NODE, NODE_NAME_RULE, unchanged, name="9-starts-with-a-digit"),
    "node-name-too-long": RuleCase(NODE, NODE_NAME_RULE, unchanged, name="n" * (NODE_NAME_LIMIT + 1)),
    "node-chainId-in-chains": RuleCase(
        NODE, "chainId must be one of chains", setter("spec.chainId", "ait-devnet"), "spec.chainId",
    ),
    "node-chains-unique": RuleCase(
        NODE, "chain ids must be unique", setter("spec.chains", ["ait-mainnet", "ait-mainnet"]), "spec.chains",
    ),
    "node-env-value-xor-valueFrom": RuleCase(
        NODE, "set either value or valueFrom, not both", setter("spec.node.env", [BOTH_VALUES]), "spec.node.env[0]",
    ),
    "rpc-env-value-xor-valueFrom": RuleCase(
        NODE, "set either value or valueFrom, not both", setter("spec.rpc.env", [BOTH_VALUES]), "spec.rpc.env[0]",
    ),
    "node-env-no-postgres-chain-url": RuleCase(
        NODE, PG_URL_MESSAGE, setter("spec.node.env", [{"name": "DATABASE_URL", "value": "postgresql://u:p@db/chain"}]),
        "spec.node.env[0]",
    ),
    "rpc-env-no-postgres-chain-url": RuleCase(
        NODE, PG_URL_MESSAGE, setter("spec.rpc.env", [{"name": "CHAIN_DB_URL", "value": "POSTGRES+psycopg://db/c"}]),
        "spec.rpc.env[0]",
    ),
    "node-storage-exactly-one": RuleCase(
        NODE, "exactly one of storage.hostPath or storage.pvc must be set",
        setter("spec.storage.hostPath", {"path": "/var/lib/aitbc", "nodeName": "worker-1"}), "spec.storage",
    ),
    "node-storage-kind-immutable": RuleCase(
        NODE, "the storage kind (hostPath or pvc) is immutable",
        both(drop("spec.storage.pvc"), setter("spec.storage.hostPath", {"path": "/var/lib/aitbc", "nodeName": "w"})),
        "spec.storage", before=unchanged,
    ),
    "node-pvc-never-shrinks": RuleCase(
        NODE, "storage.pvc.size can grow but never shrink", setter("spec.storage.pvc.size", "5Gi"), "spec.storage",
        before=setter("spec.storage.pvc.size", "10Gi"),
    ),
    "node-pvc-autoExpand-increase-positive": RuleCase(
        NODE, "storage.pvc.autoExpand.increase must be a percentage (1% to 999%) or a quantity above 0",
        setter("spec.storage.pvc.autoExpand", {"maxSize": "20Gi", "increase": "0Gi"}),
        "spec.storage.pvc.autoExpand.increase",
    ),
    "node-pvc-autoExpand-maxSize-at-least-size": RuleCase(
        NODE, "storage.pvc.autoExpand.maxSize must be at least storage.pvc.size",
        setter("spec.storage.pvc.autoExpand", {"maxSize": "5Gi"}), "spec.storage.pvc",
    ),
    "node-image-reference": RuleCase(
        NODE, f"image {IMAGE_MESSAGE}", setter("spec.node.image", "ghcr.io/aitbc/node:1.0\n"), "spec.node.image",
    ),
    "rpc-image-reference": RuleCase(
        NODE, f"image {IMAGE_MESSAGE}", setter("spec.rpc.image", "ghcr.io/aitbc/rpc:1.0 latest"), "spec.rpc.image",
    ),
    "node-volumePrep-image-reference": RuleCase(
        NODE, f"volumePrep.image {IMAGE_MESSAGE}", setter("spec.volumePrep.image", "Upper/Case:1"),
        "spec.volumePrep.image",
    ),
    "node-hostPath-normalised": RuleCase(
        NODE, f"storage.hostPath.path {PATH_MESSAGE}", host_path("/var/lib/aitbc/../../../etc"),
        "spec.storage.hostPath.path",
    ),
    "node-hostPath-forbidden": RuleCase(
        NODE, f"storage.hostPath.path {FORBIDDEN_MESSAGE}", host_path("/var"), "spec.storage.hostPath.path",
    ),
    "node-hostPath-path-immutable": RuleCase(
        NODE, "storage.hostPath.path is immutable (create a new AitbcNode to move the data)",
        setter("spec.storage.hostPath.path", "/var/lib/aitbc/other"), "spec.storage.hostPath.path",
        before=host_path("/var/lib/aitbc/first"),
    ),
    "node-hostPath-nodeName-immutable": RuleCase(
        NODE, "storage.hostPath.nodeName is immutable", setter("spec.storage.hostPath.nodeName", "worker-2"),
        "spec.storage.hostPath.nodeName", before=host_path("/var/lib/aitbc"),
    ),
    "node-dataDir-normalised": RuleCase(
        NODE, f"dataDir {PATH_MESSAGE}", setter("spec.dataDir", "/var/lib/aitbc/"), "spec.dataDir",
    ),
    "node-dataDir-immutable": RuleCase(
        NODE, "dataDir is immutable (the chain URLs and the volume layout follow it)",
        setter("spec.dataDir", "/data"), "spec.dataDir", before=unchanged,
    ),
    "node-env-reserved": RuleCase(
        NODE, reserved_env_message("node"), setter("spec.node.env", [{"name": "CHAIN_DB_URL_AIT_MAINNET",
                                                                     "value": "sqlite:////tmp/other.db"}]),
        "spec.node.env",
    ),
    "node-restore-chain": RuleCase(
        NODE, "restore.chain must be one of chains",
        setter("spec.restore", {"chain": "ait-devnet", "token": "t1"}), "spec.restore.chain",
    ),
    "node-backup-schedule": RuleCase(
        NODE, "schedule must be a cron expression of five fields (minute hour day-of-month month day-of-week)",
        setter("spec.backup", {"schedule": "every night"}), "spec.backup.schedule",
    ),
    "rpc-env-reserved": RuleCase(
        NODE, reserved_env_message("rpc"), setter("spec.rpc.env", [{"name": "REDIS_URL", "value": "redis://x"}]),
        "spec.rpc.env",
    ),
}


def test_every_cel_rule_has_a_case() -> None:
    """No cluster needed: runs with the unit tests too."""
    cases = {(c.kind, c.message) for c in RULE_CASES.values()}
    assert crd_rule_messages() - cases == set(), "CEL rules without a case in RULE_CASES"
    assert cases - crd_rule_messages() == set(), "cases in RULE_CASES for rules that no longer exist"


@pytest.mark.cluster
@pytest.mark.parametrize("case_id", sorted(RULE_CASES))
def test_cel_rule_rejects(kube: client.ApiClient, namespace: str, case_id: str) -> None:
    case = RULE_CASES[case_id]
    obj = base_object(case.kind, case.name)
    if case.before is None:
        case.bad(obj)
        status = rejection(lambda: create(kube, namespace, obj))
    else:
        case.before(obj)
        stored = create(kube, namespace, obj, dry_run=False)  # the valid object is accepted ...
        updated = copy.deepcopy(stored)
        case.bad(updated)
        status = rejection(lambda: replace(kube, namespace, updated))  # ... and the change is not
    assert_cause(status, case.message, case.field)


# --- schema constraints -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SchemaCase:
    """A value that breaks one schema constraint, placed at `path` of a valid object."""

    kind: str
    path: tuple[str | int, ...]
    constraint: str
    value: Any
    expected: str
    remove: bool = False

    @property
    def field(self) -> str:
        """The field path as the apiserver reports it, e.g. spec.node.env[0].name."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text

    @property
    def id(self) -> str:
        """A readable test id."""
        return f"{self.kind}:{self.field}:{self.constraint}"


LONG_CANDIDATES = (lambda n: "a" * n, lambda n: "/" + "a" * (n - 1), lambda n: "redis://" + "a" * (n - 8),
                   lambda n: "1" * n, lambda n: "1" * (n - 1) + "s", lambda n: "1 1 1 1 " + "1" * (n - 8))
BAD_PATTERN_CANDIDATES = ("Not Valid!", "", "-", "x y")


def _matches(pattern: str | None, value: str) -> bool:
    return pattern is None or re.search(pattern, value) is not None


def too_long(schema: Obj) -> str | None:
    """A string one byte longer than maxLength that still matches the pattern (only the length is wrong).

    None when no candidate fits: the test for that constraint then fails and says so (collection never breaks).
    """
    n = schema["maxLength"] + 1
    return next((v for make in LONG_CANDIDATES if _matches(schema.get("pattern"), v := make(n))), None)


def not_matching(pattern: str) -> str | None:
    """A string the pattern refuses (None when every candidate matches; the test then fails and says so)."""
    return next((v for v in BAD_PATTERN_CANDIDATES if not _matches(pattern, v)), None)


def constraint_cases(kind: str, schema: Obj, path: tuple[str | int, ...] = ()) -> Iterator[SchemaCase]:
    """One SchemaCase per constraint in `schema` (recursively); array items at index 0, map values at key `cpu`."""
    if "enum" in schema:
        yield SchemaCase(kind, path, "enum", "not-in-the-enum", 'Unsupported value: "not-in-the-enum"')
    if "pattern" in schema:
        yield SchemaCase(kind, path, "pattern", not_matching(schema["pattern"]), "in body should match")
    if "maxLength" in schema:
        limit = schema["maxLength"]
        yield SchemaCase(kind, path, "maxLength", too_long(schema), f"may not be more than {limit} bytes")
    if schema.get("minLength", 0) > 0:
        yield SchemaCase(kind, path, "minLength", "", f"should be at least {schema['minLength']} chars long")
    if "minimum" in schema:
        low = schema["minimum"]
        yield SchemaCase(kind, path, "minimum", low - 1, f"should be greater than or equal to {low}")
    if "maximum" in schema:
        high = schema["maximum"]
        yield SchemaCase(kind, path, "maximum", high + 1, f"should be less than or equal to {high}")
    if schema.get("minItems", 0) > 0:
        yield SchemaCase(kind, path, "minItems", [], f"should have at least {schema['minItems']} items")
    if "maxItems" in schema:
        too_many = [f"x{i}" for i in range(schema["maxItems"] + 1)]
        yield SchemaCase(kind, path, "maxItems", too_many, f"must have at most {schema['maxItems']} items")
    for required in schema.get("required", []):
        yield SchemaCase(kind, (*path, required), "required", None, "Required value", remove=True)
    for name, child in schema.get("properties", {}).items():
        if path == () and name != "spec":
            continue  # metadata is the apiserver's; status is a subresource (ignored on create)
        yield from constraint_cases(kind, child, (*path, name))
    if isinstance(schema.get("items"), dict):
        yield from constraint_cases(kind, schema["items"], (*path, 0))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from constraint_cases(kind, schema["additionalProperties"], (*path, "cpu"))


def place(obj: Obj, case: SchemaCase) -> None:
    """Put the case's value at its path (creating dicts and one-item lists on the way), or remove the key."""
    node: Any = obj
    for part, nxt in zip(case.path[:-1], case.path[1:], strict=True):
        empty: Any = [{}] if isinstance(nxt, int) else {}
        if isinstance(part, int):
            if not node or not isinstance(node[0], dict | list):
                node[:] = [empty]
            node = node[0]
        else:
            if not isinstance(node.get(part), dict | list) or (isinstance(nxt, int) and not node[part]):
                node[part] = empty
            node = node[part]
    last = case.path[-1]
    if case.remove:
        if isinstance(node, dict):
            node.pop(last, None)
    elif isinstance(last, int):
        node[:] = [case.value]
    else:
        node[last] = case.value


SCHEMA_CASES = [case for kind, crd in sorted(load_crds().items()) for case in constraint_cases(kind, root_schema(crd))]


def test_the_schemas_have_constraints_to_check() -> None:
    """Guards the walker itself: the constraints of both kinds are found (spot checks of known ones)."""
    ids = {c.id for c in SCHEMA_CASES}
    assert {"AitbcDatabase:spec.service:enum", "AitbcNode:spec.chains[0]:pattern", "AitbcNode:spec.chains:minItems",
            "AitbcDatabase:spec.server.adminSecretRef.name:required"} <= ids
    assert len(SCHEMA_CASES) > 40


@pytest.mark.cluster
@pytest.mark.parametrize("case", SCHEMA_CASES, ids=[c.id for c in SCHEMA_CASES])
def test_schema_constraint_rejects(kube: client.ApiClient, namespace: str, case: SchemaCase) -> None:
    assert case.remove or case.value is not None, f"no bad value found for {case.id}: extend the candidates"
    obj = base_object(case.kind)
    place(obj, case)
    status = rejection(lambda: create(kube, namespace, obj))
    assert_cause(status, case.expected, case.field)


# --- kubectl explain ----------------------------------------------------------------------------------------------

#: The day-2 fields (issue 15) and a phrase of their description that `kubectl explain` must show.
EXPLAINED = {
    "spec.consumers": "stamps its hash on their pod templates",
    "spec.consumers.selector.matchLabels": "a workload matches when it has all of them",
    "spec.password.rotationStrategy": "AlternatingRoles",
    "spec.password.gracePeriod": "the longest the previous login keeps its password",
    "spec.readOnly": "SELECT on every table",
    "spec.readOnly.roleName": "<roleName>_ro",
    "spec.extensions.name": "Only trusted extensions can be created by the owner",
    "spec.extensions.ensure": "An extension removed from the list is left alone",
    "spec.schemas.name": "Schema name",
    "spec.backup.schedule": "Cron schedule in UTC",
    "spec.backup.image": "official `postgres:<major>` image",
    "spec.restore.file": "a file name in the backup volume",
    "spec.restore.stopConsumers": "Scale the consumers to zero",
    "spec.secret.templates": "urlescape",
    "status.consumers.current": "the rollout is complete",
    "status.rotation.phase": "Switched",
    "status.backup.lastFile": "The file it wrote",
    "status.restore.phase": "StartingConsumers",
    "status.readOnly.secretName": "Its Secret",
}


@pytest.mark.cluster
@pytest.mark.parametrize("path", sorted(EXPLAINED))
def test_kubectl_explain_describes_the_day2_fields(k8s_cluster: Any, path: str) -> None:
    out = k8s_cluster.kubectl("explain", f"aitbcdatabase.{path}").stdout
    assert EXPLAINED[path] in " ".join(out.split()), out
