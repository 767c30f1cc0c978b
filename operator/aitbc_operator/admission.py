"""The ValidatingAdmissionPolicy that enforces the operator's node policy (node_policy.py) at admission.

Rendered for kustomize (deploy/base/node-policy.yaml) and Helm (charts/.../templates/node-policy.yaml) by
`aitbc-operator manifests`, like the RBAC, and drift-checked by the tests.

The settings are rendered into the policy (its first three ``variables`` are string literals of the three settings)
rather than read from a params ConfigMap through ``paramKind``. Kubernetes loses ConfigMap params for good when a
policy is briefly without a binding (kubernetes/kubernetes#133827, fix pending in #141015): every AitbcNode change
is then refused ("no params found") or, worse, checked against a stale copy of the settings until the apiserver
restarts. A policy carrying its values has no such state. What keeps it equal to the operator's settings:

- Helm renders the policy's literals and the operator's environment from the same values (``nodePolicy``);
- kustomize: the ConfigMap ``aitbc-operator-node-policy`` is the operator's environment (``envFrom``) and
  ``replacements`` copy its three values into the policy's literals (an overlay that patches the ConfigMap repeats
  those replacements after its patch, as it does for the operator image);
- the tests render both with changed settings and compare the result with :func:`policy_spec` of those settings.

Only spec changes are checked (CREATE, or an UPDATE whose spec differs): the operator's own metadata patches
(finalizers, kopf's annotations) of an object admitted under looser settings must still go through; such an object
is refused by the reconciler instead (Degraded, InvalidSpec).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from . import GROUP, VERSION
from .models.rules import cel_list
from .node_policy import (
    ENV_ALLOW_PRIVILEGED,
    ENV_HOSTPATH_PREFIXES,
    ENV_VOLUME_PREP_IMAGES,
    PRIVILEGED_MESSAGE,
    TRUE_WORDS,
    NodePolicy,
)
from .rbac import DEFAULT_PREFIX

POLICY_SUFFIX = "node-policy"
API_VERSION = "admissionregistration.k8s.io/v1"
LABELS = {"app.kubernetes.io/name": "aitbc-operator", "app.kubernetes.io/component": "admission"}


#: Each setting variable is ``"<the setting as in the environment>"`` followed by one of these (no double quote in them:
#: kustomize's replacements put the ConfigMap value between the first two double quotes).
LIST_SUFFIX = ".split(',').map(p, p.trim()).filter(p, p != '')"
BOOL_SUFFIX = f".trim().lowerAscii() in {cel_list(TRUE_WORDS)}"
#: Setting variable name -> (environment variable, suffix), in the order of ``variables``.
SETTING_VARIABLES = {
    "prefixes": (ENV_HOSTPATH_PREFIXES, LIST_SUFFIX),
    "allowPrivileged": (ENV_ALLOW_PRIVILEGED, BOOL_SUFFIX),
    "images": (ENV_VOLUME_PREP_IMAGES, LIST_SUFFIX),
}


def policy_spec(settings: NodePolicy | None = None) -> dict[str, Any]:
    """The ValidatingAdmissionPolicy's spec for these settings (the operator's defaults by default)."""
    return _policy_spec((settings or NodePolicy()).as_env())


def _policy_spec(env: Mapping[str, str]) -> dict[str, Any]:
    host_path = "object.spec.storage.hostPath.path"
    prep = "object.spec.volumePrep"
    variables = [{"name": name, "expression": f'"{env[key]}"{suffix}'}
                 for name, (key, suffix) in SETTING_VARIABLES.items()]
    return {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "operations": ["CREATE", "UPDATE"],
                               "resources": ["aitbcnodes"]}],
        },
        "matchConditions": [
            {"name": "spec-changed", "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec"},
        ],
        "variables": variables,
        "validations": [
            {
                "expression": f"!has(object.spec.storage.hostPath) || variables.prefixes.exists(p, p == '/'"
                              f" || {host_path} == p || {host_path}.startsWith(p + '/'))",
                "messageExpression": f"'storage.hostPath.path ' + {host_path} + ' is not under a prefix the operator"
                                     f" allows ({ENV_HOSTPATH_PREFIXES}: ' + (variables.prefixes.size() > 0"
                                     " ? variables.prefixes.join(', ') : 'none: hostPath storage is disabled') + ')'",
                "reason": "Forbidden",
            },
            {
                "expression": f"!has({prep}) || !has({prep}.privileged) || !{prep}.privileged"
                              " || variables.allowPrivileged",
                "message": PRIVILEGED_MESSAGE,
                "reason": "Forbidden",
            },
            {
                "expression": f"!has({prep}) || !has({prep}.image) || {prep}.image in variables.images",
                "messageExpression": f"'volumePrep.image ' + {prep}.image + ' is not an image the operator allows"
                                     f" ({ENV_VOLUME_PREP_IMAGES}); leave it unset to run the operator\\'s own image'",
                "reason": "Forbidden",
            },
        ],
    }


def policy(name: str, settings: NodePolicy | None = None) -> dict[str, Any]:
    """The ValidatingAdmissionPolicy ``name`` for these settings."""
    return {"apiVersion": API_VERSION, "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": LABELS}, "spec": policy_spec(settings)}


def binding(name: str) -> dict[str, Any]:
    """The binding of policy ``name`` (same name), denying what it refuses, in every namespace."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": LABELS},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }


def settings_configmap(name: str, namespace: str) -> dict[str, Any]:
    """The operator's node settings with their defaults, as the ConfigMap its Deployment reads (envFrom)."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace,
                                                                  "labels": LABELS},
            "data": NodePolicy().as_env()}


HEADER = "# Generated by `aitbc-operator manifests` from operator/aitbc_operator/admission.py. Do not edit.\n"


def _dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=1000)


def kustomize_policy(namespace: str = "aitbc-system") -> str:
    """deploy/base/node-policy.yaml: the settings ConfigMap with the defaults, the policy and its binding."""
    name = f"{DEFAULT_PREFIX}-{POLICY_SUFFIX}"
    docs = [
        "# The operator's node settings (its environment: envFrom). Change them here; the replacements in\n"
        "# kustomization.yaml copy them into the policy below.\n"
        + _dump(settings_configmap(name, namespace)),
        _dump(policy(name)),
        _dump(binding(name)),
    ]
    return HEADER + "---\n".join(docs)


#: The chart's value of each setting, as it appears in the environment (values.schema.json keeps quotes,
#: backslashes, commas and control characters out of them, so they sit safely inside the CEL and YAML literals).
HELM_SETTINGS = {
    ENV_HOSTPATH_PREFIXES: '{{ join "," .Values.nodePolicy.hostPathPrefixes }}',
    ENV_ALLOW_PRIVILEGED: "{{ .Values.nodePolicy.allowPrivileged }}",
    ENV_VOLUME_PREP_IMAGES: '{{ join "," .Values.nodePolicy.volumePrepImages }}',
}


def helm_policy() -> str:
    """charts/aitbc-operator/templates/node-policy.yaml: the same objects, names and settings from the chart."""
    full = '{{ include "aitbc-operator.fullname" . }}-' + POLICY_SUFFIX
    labels = ('  labels:\n    {{- include "aitbc-operator.labels" . | nindent 4 }}\n'
              "    app.kubernetes.io/component: admission\n")
    configmap = (
        "# The operator's node settings (its environment: envFrom), from the same values as the policy below.\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        f"  name: {full}\n  namespace: {{{{ .Release.Namespace }}}}\n{labels}"
        "data:\n" + "".join(f"  {k}: {v.removesuffix(' }}')} | quote }}}}\n" for k, v in HELM_SETTINGS.items())
    )
    tokens = {key: f"@@{key}@@" for key in HELM_SETTINGS}
    spec = _dump({"spec": _policy_spec(tokens)})
    for key, token in tokens.items():
        spec = spec.replace(token, HELM_SETTINGS[key])
    vap = f"apiVersion: {API_VERSION}\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: {full}\n{labels}" + spec
    bind = (
        f"apiVersion: {API_VERSION}\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: {full}\n{labels}"
        f"spec:\n  policyName: {full}\n  validationActions: [Deny]\n"
    )
    return (HEADER + configmap + "{{- if .Values.nodePolicy.admissionPolicy.enabled }}\n---\n" + vap + "---\n" + bind
            + "{{- end }}\n")
