"""Render the CustomResourceDefinitions from the pydantic models (the models are the single source of truth).

`aitbc-operator crds` writes them to `crds/`; `aitbc-operator crds --check` fails with a diff when the files are stale.
The pydantic JSON schema is turned into a Kubernetes *structural* schema: references inlined, `Optional[X]` collapsed
to `X`, `int | str` turned into `x-kubernetes-int-or-string`, titles dropped, descriptions kept everywhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from . import GROUP, VERSION
from .models import AitbcDatabaseSpec, AitbcDatabaseStatus, AitbcNodeSpec, AitbcNodeStatus
from .models.base import cel

Schema = dict[str, Any]

#: Schema keywords kept, in the order they are written (type and description first, for readable YAML).
_KEEP = (
    "type", "description", "format", "enum", "default", "pattern", "minLength", "maxLength", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "minProperties", "maxProperties",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "required",
    "properties", "additionalProperties", "items", "x-kubernetes-validations",
)


@dataclass(frozen=True)
class CrdInfo:
    """Names and presentation of one custom resource."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[dict[str, Any], ...]
    description: str
    root_rules: tuple[dict[str, str], ...] = ()

    @property
    def name(self) -> str:
        """metadata.name of the CRD."""
        return f"{self.plural}.{GROUP}"

    @property
    def filename(self) -> str:
        """File name under crds/."""
        return f"{GROUP}_{self.plural}.yaml"


def _condition_column(name: str, cond: str, field: str, priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{cond}")].{field}',
    }
    if priority:
        col["priority"] = priority
    return col


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

DATABASE = CrdInfo(
    kind="AitbcDatabase",
    plural="aitbcdatabases",
    singular="aitbcdatabase",
    short_names=("aitbcdb", "adb"),
    spec=AitbcDatabaseSpec,
    status=AitbcDatabaseStatus,
    columns=(
        {"name": "Service", "type": "string", "jsonPath": ".spec.service"},
        {"name": "Database", "type": "string", "jsonPath": ".status.databaseName"},
        _condition_column("Ready", "Ready", "status"),
        _condition_column("Reason", "Ready", "reason"),
        {"name": "Secret", "type": "string", "jsonPath": ".status.secretName"},
        {"name": "Size", "type": "integer", "jsonPath": ".status.databaseSizeBytes", "priority": 1},
        {"name": "Server", "type": "string", "jsonPath": ".status.serverVersion", "priority": 1},
        _AGE,
    ),
    description="AitbcDatabase is a PostgreSQL database, the login role that owns it and a Secret with its connection "
    "URL, for one AITBC service.",
)

NODE = CrdInfo(
    kind="AitbcNode",
    plural="aitbcnodes",
    singular="aitbcnode",
    short_names=("aitbcnode", "anode"),
    spec=AitbcNodeSpec,
    status=AitbcNodeStatus,
    columns=(
        {"name": "Chains", "type": "string", "jsonPath": ".spec.chains"},
        {"name": "Height", "type": "integer", "jsonPath": ".status.chains[0].fileHeight"},
        {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase"},
        _condition_column("Ready", "Ready", "status"),
        _condition_column("Reason", "Ready", "reason"),
        {"name": "Hash", "type": "string", "jsonPath": ".status.configHash", "priority": 1},
        {"name": "FS", "type": "string", "jsonPath": ".status.volume.fs", "priority": 1},
        _AGE,
    ),
    root_rules=(
        cel(
            "self.metadata.name.size() <= 47 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "metadata.name must be a DNS-1035 label of at most 47 characters (it prefixes the names of the node's"
            " StatefulSet, its pods' revision labels, the Deployment and Services)",
        ),
    ),
    description="AitbcNode is an AITBC blockchain node (a single-writer StatefulSet), its RPC Deployment and their "
    "SQLite chain volume, rolled out node first, RPC second.",
)

ALL = (DATABASE, NODE)


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    """Inline `$ref`s and make the schema structural."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        # Siblings of $ref (description, default, validations) win over the referenced definition's.
        target.update(node)
        node = target
    # Optional[X] -> X (absence is how Kubernetes says "unset"; null is not accepted).
    for key in ("anyOf", "oneOf"):
        if key in node:
            variants = [v for v in node[key] if v != {"type": "null"}]
            if node.get("x-kubernetes-int-or-string"):
                node.pop(key)
            elif len(variants) == 1:
                node.pop(key)
                merged = dict(variants[0])
                merged.update(node)
                node = merged
                return _resolve(node, defs)
            elif sorted(v.get("type", "") for v in variants) == ["integer", "string"]:
                node.pop(key)
                node["x-kubernetes-int-or-string"] = True
                pattern = next((v["pattern"] for v in variants if "pattern" in v), None)
                if pattern:
                    node["pattern"] = pattern
            else:
                raise ValueError(f"cannot express {key} with {variants} in a structural schema")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        node.pop("anyOf", None)
    if isinstance(node.get("additionalProperties"), bool):
        # `additionalProperties: false` is implied by a structural schema; `true` is preserve-unknown-fields.
        node.pop("additionalProperties")
    out: Schema = {}
    for key in _KEEP:
        if key not in node:
            continue
        value = node[key]
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _resolve(value, defs)
        else:
            out[key] = value
    if out.get("default") is None:
        out.pop("default", None)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out:
        out.setdefault("type", "object")
    if "description" in out:
        out["description"] = " ".join(out["description"].split())
    return out


def _drop_required_with_defaults(schema: Schema) -> None:
    """A property with a default is not required on the wire."""
    props = schema.get("properties", {})
    if "required" in schema:
        schema["required"] = [r for r in schema["required"] if "default" not in props.get(r, {})]
        if not schema["required"]:
            del schema["required"]
    for sub in props.values():
        _drop_required_with_defaults(sub)
        if isinstance(sub.get("items"), dict):
            _drop_required_with_defaults(sub["items"])


def model_schema(model: type[BaseModel], *, mode: str = "validation") -> Schema:
    """The structural OpenAPI v3 schema of a model."""
    raw = model.model_json_schema(by_alias=True, mode=mode)  # type: ignore[arg-type]
    defs = raw.pop("$defs", {})
    schema: Schema = _resolve(raw, defs)
    _drop_required_with_defaults(schema)
    return schema


def _strip_defaults(schema: Any) -> Any:
    """Status schemas carry no defaults (the operator writes what it means)."""
    if isinstance(schema, dict):
        return {k: _strip_defaults(v) for k, v in schema.items() if k != "default"}
    if isinstance(schema, list):
        return [_strip_defaults(v) for v in schema]
    return schema


def render_crd(info: CrdInfo) -> dict[str, Any]:
    """The CRD manifest of one resource."""
    spec = model_schema(info.spec)
    status = _strip_defaults(model_schema(info.status, mode="serialization"))
    status.pop("required", None)
    spec["description"] = " ".join((info.spec.__doc__ or "").split())
    status["description"] = " ".join((info.status.__doc__ or "").split())
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.name,
            "labels": {"app.kubernetes.io/name": "aitbc-operator", "app.kubernetes.io/part-of": "aitbc"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": ["aitbc"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(info.columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": info.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "APIVersion of this object."},
                                "kind": {"type": "string", "description": "Kind of this object."},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            **({"x-kubernetes-validations": list(info.root_rules)} if info.root_rules else {}),
                        }
                    },
                }
            ],
        },
    }


HEADER = (
    "# Generated by `aitbc-operator crds` from the pydantic models in operator/aitbc_operator/models."
    " Do not edit.\n"
)


def render_yaml(info: CrdInfo) -> str:
    """The CRD as the YAML text written to crds/."""
    return HEADER + yaml.safe_dump(render_crd(info), sort_keys=False, width=120, allow_unicode=True)


def render_all() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    return {info.filename: render_yaml(info) for info in ALL}
