"""Shared pydantic base classes and small types used by both custom resources."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

#: PostgreSQL identifiers we accept: lower-case ASCII, digits and underscores, starting with a letter or underscore.
#: ASCII-only means characters == bytes, so ``maxLength: 63`` is PostgreSQL's NAMEDATALEN - 1 limit.
IDENTIFIER_PATTERN = r"^[a-z_][a-z0-9_]*$"
IDENTIFIER_MAX_BYTES = 63
#: Names PostgreSQL reserves or that would be dangerous to own/drop.
RESERVED_DATABASE_NAMES = ("postgres", "template0", "template1")
RESERVED_ROLE_NAMES = ("postgres", "public", "none", "current_user", "session_user", "current_role")

#: Kubernetes DNS-1123 label, used for chain ids.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: Kubernetes object names (DNS-1123 subdomain).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Go-style durations as used in CRDs: ``90s``, ``15m``, ``720h``, ``1h30m``.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """Return the number of seconds in a Go-style duration such as ``1h30m``."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: use e.g. 90s, 15m, 720h")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value))


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One entry of ``x-kubernetes-validations`` (a CEL rule evaluated by the apiserver at admission)."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

#: A Kubernetes resource quantity: ``500m``, ``1Gi`` or a plain integer.
Quantity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
                    "pattern": QUANTITY_PATTERN}),
]


class Spec(BaseModel):
    """Base for everything under ``spec``: camelCase, unknown fields rejected, docstrings become descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
    )


class Status(BaseModel):
    """Base for everything under ``status``: camelCase on the wire, unknown fields ignored when read back."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-compatible dict written to the apiserver (camelCase, unset fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class LocalObjectReference(Spec):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the referenced object (same namespace as this resource)."""


class SecretKeySelector(Spec):
    """A key of a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the Secret (same namespace as this resource)."""
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key within the Secret."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Status):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=316)
    """Condition type, e.g. Ready, Progressing, Degraded."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(max_length=1024)
    """One-word CamelCase reason for the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail. Never contains a password or a connection URL."""
    last_transition_time: datetime | None = None
    """When the status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the condition was computed for."""
