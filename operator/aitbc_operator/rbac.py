"""The operator's RBAC rules: the one source of truth for kustomize (deploy/base/rbac.yaml) and Helm.

Pure data plus its renderings, written by `aitbc-operator manifests` and drift-checked by the tests.
Least privilege: exact API groups, resources and verbs, no wildcards, each rule with the reason it exists.
tests/integration/test_rbac_usage.py runs the operator under exactly these rules through a whole lifecycle and
compares them with the apiserver's audit log both ways: nothing refused, and no verb granted that nothing needed.
The roles are split so that a reader sees who needs what:

- ``FRAMEWORK`` (ClusterRole): what kopf itself does: watching CRDs, namespace watching, posting Events.
  CRDs and namespaces are cluster-scoped, so it is always bound cluster-wide.
- ``APPLICATION`` (ClusterRole): what the reconcilers read and write. Only namespaced resources, so it is bound either
  cluster-wide (ClusterRoleBinding) or, when only some namespaces are watched, by a RoleBinding in each of them.
- ``CLAIMS`` (ClusterRole, always bound cluster-wide): listing AitbcDatabases in every namespace, because a database or
  role name on a PostgreSQL server belongs to one AitbcDatabase cluster-wide (even when few namespaces are watched);
  reading StorageClasses (cluster-scoped) for the chain volume's auto-expansion.
- ``LEADER_ELECTION`` (Role in the operator's own namespace): the Lease that lets one replica of several reconcile.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

import yaml

from . import GROUP

#: Verbs for children the operator converges with server-side apply: read the live object, apply (an apply that
#: creates the object is authorized for `create` besides `patch`). Never `delete`: children go with their owner by
#: garbage collection (ownerReferences), and a retained chain volume claim outlives it.
_APPLIED = ("get", "create", "patch")
#: Children whose changes the operator also watches (kopf event handlers list and watch them).
_APPLIED_WATCHED = ("get", "list", "watch", "create", "patch")
_READ = ("get", "list", "watch")


@dataclass(frozen=True)
class Rule:
    """One PolicyRule, and why the operator needs it."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    resource_names: tuple[str, ...] = ()

    def to_manifest(self) -> dict[str, Any]:
        """The rule as it appears in a (Cluster)Role."""
        rule: dict[str, Any] = {"apiGroups": list(self.api_groups), "resources": list(self.resources)}
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        rule["verbs"] = list(self.verbs)
        return rule


@dataclass(frozen=True)
class Role:
    """A ClusterRole (or, when `namespaced`, a Role in the operator's namespace) named `<prefix>-<suffix>`."""

    suffix: str
    description: str
    rules: tuple[Rule, ...]
    namespaced: bool = False

    @property
    def kind(self) -> str:
        """Role or ClusterRole."""
        return "Role" if self.namespaced else "ClusterRole"


FRAMEWORK = Role(
    suffix="framework",
    description="What the kopf framework needs: CRD watching, namespace watching, Events.",
    rules=(
        Rule(("apiextensions.k8s.io",), ("customresourcedefinitions",), ("list", "watch"),
             "kopf: notice when the CRDs of the served resources appear, change or disappear (served resources"
             " themselves are discovered through the API discovery endpoints, which every user may read)."),
        Rule(("",), ("namespaces",), ("list", "watch"),
             "kopf: follow the watched namespaces when given a list of them (Helm's watchNamespaces); watching"
             " cluster-wide it does not look at namespaces. The AitbcDatabase finalizer lists its own namespace (by"
             " name) when a Drop's admin Secret is gone: is the namespace being deleted?"),
        Rule(("",), ("events",), ("create",),
             "kopf and the reconcilers: post Events about handler progress and errors on the custom resources"
             " (each Event is a new object; none is ever patched)."),
    ),
)

APPLICATION = Role(
    suffix="application",
    description="What the AitbcDatabase and AitbcNode reconcilers read and write.",
    rules=(
        Rule((GROUP,), ("aitbcdatabases", "aitbcnodes"), ("get", "list", "watch", "patch"),
             "The custom resources: watch them, add/remove the finalizer and kopf's progress annotations."),
        Rule((GROUP,), ("aitbcdatabases/status", "aitbcnodes/status"), ("patch",),
             "Their status subresource: observedGeneration, conditions, rollout, volume report."),
        Rule((GROUP,), ("aitbcdatabases/finalizers", "aitbcnodes/finalizers"), ("update",),
             "Set ownerReferences with blockOwnerDeletion on children (required where the"
             " OwnerReferencesPermissionEnforcement admission plugin is enabled)."),
        Rule(("",), ("secrets",), ("get", "list", "watch", "create", "patch"),
             "Write the connection Secrets; read the admin and CA Secrets an AitbcDatabase references and the"
             " connection Secret an AitbcNode's mempool uses (by name). Listed and watched only with the label"
             " selector app.kubernetes.io/managed-by=aitbc-operator (RBAC cannot limit list/watch by label)."
             " Never deleted: a Secret outlives its database (Retain)."),
        Rule(("",), ("configmaps", "services", "persistentvolumeclaims"), _APPLIED,
             "An AitbcNode's environment ConfigMaps, node and RPC Services, chain volume and backup volume claims"
             " (read, then applied when they differ). Never deleted: garbage collection removes them with their owner;"
             " the claims are kept."),
        Rule(("apps",), ("statefulsets", "deployments"), _APPLIED_WATCHED,
             "An AitbcNode's node StatefulSet and RPC Deployment: watched for rollout progress, applied (rollouts"
             " patch their pod templates). Never deleted: garbage collection removes them with their owner. An"
             " AitbcDatabase's consumers (spec.consumers, not owned): read, their pod template stamped with the"
             " Secret's hash, their replicas set to zero and back during a restore."),
        Rule(("batch",), ("jobs",), _APPLIED_WATCHED,
             "An AitbcDatabase's dump and restore Jobs (on demand, and each step of a restore), an AitbcNode's"
             " backup, restore and maintenance Jobs: created under fixed names (the slot or the request), watched"
             " for their outcome (read from the pod's termination message or report). Never deleted: a TTL"
             " removes finished ones, garbage collection the rest with their owner."),
        Rule(("batch",), ("cronjobs",), ("get", "create", "patch", "delete"),
             "An AitbcDatabase's backup CronJob (spec.backup): applied, suspended during a restore, and deleted when"
             " spec.backup is removed (the dumps in the volume stay)."),
        Rule(("",), ("pods",), _READ,
             "Read node, RPC and Job pods: readiness, restarts, the node pod's IP (its chain-health sidecar), the init"
             " container's and the Jobs' reports (termination messages). Pods are never deleted; rollouts patch the"
             " pod templates."),
        Rule(("",), ("events",), ("list",),
             "Read the Events of an AitbcNode's node StatefulSet while its pod is missing: the StatefulSet controller"
             " says why it cannot create the pod (FailedCreate) only there (a StatefulSet has no ReplicaFailure"
             " condition; for the RPC the Deployment's condition suffices)."),
    ),
)

CLAIMS = Role(
    suffix="claims",
    description="Cluster-wide reads: who claims which database and role on which server; StorageClasses.",
    rules=(
        Rule((GROUP,), ("aitbcdatabases",), ("list", "watch"),
             "Name claims (reconcilers/claims.py): a database or role name on one PostgreSQL server belongs to the"
             " first AitbcDatabase that claimed it in any namespace (one list, then a watch); Drop is refused while"
             " another one uses it."),
        Rule(("storage.k8s.io",), ("storageclasses",), ("get",),
             "storage.pvc.autoExpand: read the chain volume claim's StorageClass (by name) to know whether it allows"
             " volume expansion before raising the claim's request; never written."),
    ),
)

#: The Lease the replicas compete for (settings.leader_election_name, AITBC_LEADER_ELECTION_NAME). Shared by every
#: installation in a namespace, so two installations there cannot both reconcile.
LEADER_LEASE = "aitbc-operator-leader"

LEADER_ELECTION = Role(
    suffix="leader-election",
    description="The leader Lease in the operator's own namespace (k8s/lease.py): one replica of several reconciles.",
    namespaced=True,
    rules=(
        Rule(("coordination.k8s.io",), ("leases",), ("create",),
             "Create the leader Lease the first time (`create` cannot be limited to a name)."),
        Rule(("coordination.k8s.io",), ("leases",), ("get", "update"),
             "Read, take over and renew the leader Lease (optimistic concurrency with resourceVersion).",
             resource_names=(LEADER_LEASE,)),
    ),
)

ROLES = (FRAMEWORK, APPLICATION, CLAIMS, LEADER_ELECTION)

DEFAULT_PREFIX = "aitbc-operator"

HEADER = "# Generated by `aitbc-operator manifests` from operator/aitbc_operator/rbac.py. Do not edit.\n"


def rules_yaml(role: Role) -> str:
    """The `rules:` block of a role with each rule's reason as a comment above it.

    Each rule is dumped by the YAML library; only the comments (which YAML libraries cannot write) are added as text.
    """
    out = ["rules:\n"]
    for rule in role.rules:
        dumped = yaml.safe_dump([rule.to_manifest()], default_flow_style=None, sort_keys=False, width=1000)
        out.extend(f"  # {line}\n" for line in textwrap.wrap(rule.why, 110))
        out.extend(f"  {line}\n" for line in dumped.splitlines())
    return "".join(out)


LABELS = {"app.kubernetes.io/name": "aitbc-operator", "app.kubernetes.io/component": "rbac"}


def _dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=1000)


def kustomize_rbac(namespace: str = "aitbc-system", service_account: str = DEFAULT_PREFIX) -> str:
    """deploy/base/rbac.yaml: every role and its binding to the operator's ServiceAccount (cluster-wide watching)."""
    docs = []
    for role in ROLES:
        name = f"{DEFAULT_PREFIX}-{role.suffix}"
        meta: dict[str, Any] = {"name": name, **({"namespace": namespace} if role.namespaced else {}), "labels": LABELS}
        head = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": role.kind, "metadata": meta}
        docs.append(f"# {role.description}\n" + _dump(head) + rules_yaml(role))
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding" if role.namespaced else "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role.kind, "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        }
        docs.append(_dump(binding))
    return HEADER + "---\n".join(docs)


def helm_roles() -> str:
    """charts/aitbc-operator/templates/rbac-roles.yaml: the same roles; names and labels from the chart's helpers.

    The bindings are written by hand in the chart (they depend on values such as watchNamespaces).
    """
    docs = []
    for role in ROLES:
        namespace = "  namespace: {{ .Release.Namespace }}\n" if role.namespaced else ""
        docs.append(
            f"# {role.description}\n"
            "apiVersion: rbac.authorization.k8s.io/v1\n"
            f"kind: {role.kind}\n"
            "metadata:\n"
            f'  name: {{{{ include "aitbc-operator.fullname" . }}}}-{role.suffix}\n'
            + namespace
            + "  labels:\n"
            '    {{- include "aitbc-operator.labels" . | nindent 4 }}\n'
            "    app.kubernetes.io/component: rbac\n"
            + rules_yaml(role)
        )
    return HEADER + "{{- if .Values.rbac.create }}\n" + "---\n".join(docs) + "{{- end }}\n"
