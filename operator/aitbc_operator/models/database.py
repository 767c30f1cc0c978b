"""The AitbcDatabase custom resource: one PostgreSQL database, its owning login role and a connection Secret."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import (
    DNS_SUBDOMAIN_PATTERN,
    DURATION_PATTERN,
    IDENTIFIER_MAX_BYTES,
    IDENTIFIER_PATTERN,
    RESERVED_DATABASE_NAMES,
    RESERVED_ROLE_NAMES,
    Condition,
    LocalObjectReference,
    SecretKeySelector,
    Spec,
    Status,
    cel,
    validations,
)

KIND = "AitbcDatabase"
PLURAL = "aitbcdatabases"


class Service(StrEnum):
    """The AITBC application services that use PostgreSQL."""

    COORDINATOR = "coordinator"
    EXCHANGE = "exchange"
    MARKETPLACE = "marketplace"
    MEMPOOL = "mempool"
    WALLET = "wallet"


#: The environment variable each service reads its connection URL from (the runbook's systemd drop-ins).
SERVICE_URL_ENV: dict[Service, str] = {
    Service.COORDINATOR: "DATABASE_URL",
    Service.EXCHANGE: "EXCHANGE_DATABASE_URL",
    Service.MARKETPLACE: "MARKETPLACE_DATABASE_URL",
    Service.MEMPOOL: "MEMPOOL_DB_URL",
    Service.WALLET: "WALLET_DATABASE_URL",
}

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class DeletionPolicy(StrEnum):
    """What happens to the database and the role when the AitbcDatabase is deleted."""

    RETAIN = "Retain"
    DROP = "Drop"


def _identifier_rules(what: str, reserved: tuple[str, ...]) -> list[dict[str, str]]:
    listed = ", ".join(f"'{n}'" for n in reserved)
    return [
        cel(f"!(self in [{listed}])", f"{what} must not be a name reserved by PostgreSQL ({', '.join(reserved)})"),
        cel("!self.startsWith('pg_')", f"{what} must not start with 'pg_' (reserved by PostgreSQL)"),
    ]


def check_identifier(value: str, what: str, reserved: tuple[str, ...]) -> str:
    """The operator's own check of a PostgreSQL identifier; mirrors the CRD's schema and CEL rules."""
    import re

    if len(value.encode()) > IDENTIFIER_MAX_BYTES:
        raise ValueError(f"{what} is {len(value.encode())} bytes; PostgreSQL identifiers are at most 63 bytes")
    if not re.fullmatch(IDENTIFIER_PATTERN, value):
        raise ValueError(
            f"{what} {value!r} must be lower-case letters, digits and underscores, starting with a letter or underscore"
        )
    if value in reserved or value.startswith("pg_"):
        raise ValueError(f"{what} {value!r} is reserved by PostgreSQL")
    return value


class ServerSpec(Spec):
    """Which PostgreSQL server to use, and how to reach it."""

    admin_secret_ref: LocalObjectReference
    """Secret with the admin connection: either a `uri` key (postgresql://user:password@host:port/dbname) or the keys
    `host`, `port` (optional, default 5432), `username`, `password` and optionally `dbname` (default `postgres`).
    The admin role needs CREATEROLE and CREATEDB; superuser is not required."""
    ssl_mode: SslMode = "require"
    """libpq sslmode used by the operator and written into the connection Secret. The default, `require`, refuses
    to talk without TLS (`prefer` would silently fall back to cleartext); `verify-full` also checks the server's
    certificate and name against `caSecretRef`."""
    ca_secret_ref: SecretKeySelector | None = None
    """CA certificate (PEM) to verify the server with; required for sslmode verify-ca and verify-full. The
    connection Secret then carries it as `ca.crt`, and its URLs name `sslrootcert=/etc/aitbc/postgres-ca/ca.crt`:
    mount the Secret's `ca.crt` key there in the application's pod."""
    client_host: str | None = Field(default=None, min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    """Host name applications use to reach the server, when it differs from the admin host
    (e.g. an in-cluster Service name). Defaults to the admin host."""
    client_port: int | None = Field(default=None, ge=1, le=65535)
    """Port applications use, when it differs from the admin port. Defaults to the admin port."""

    model_config = Spec.model_config | {
        "json_schema_extra": validations(
            cel(
                "!(self.sslMode in ['verify-ca', 'verify-full']) || has(self.caSecretRef)",
                "caSecretRef is required when sslMode is verify-ca or verify-full",
                field_path=".caSecretRef",
            )
        )
    }

    @model_validator(mode="after")
    def _ca_for_verify(self) -> ServerSpec:
        if self.ssl_mode in ("verify-ca", "verify-full") and self.ca_secret_ref is None:
            raise ValueError("server.caSecretRef is required when sslMode is verify-ca or verify-full")
        return self


class PasswordSpec(Spec):
    """How the role's password is generated and rotated."""

    length: int = Field(default=32, ge=16, le=128)
    """Number of characters of the generated password (from a cryptographic generator)."""
    rotation_period: str | None = Field(default=None, pattern=DURATION_PATTERN, max_length=32)
    """Rotate the password automatically this long after the last rotation, e.g. `720h`. Unset: never on a schedule."""
    rotation_token: str | None = Field(default=None, max_length=253)
    """Change this value (any string, e.g. a date) to rotate the password now. The annotation
    `aitbc.io/rotate-password` does the same without editing the spec."""


class SecretSpec(Spec):
    """The output Secret holding the connection details."""

    name: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the Secret; defaults to `<metadata.name>-db`. Immutable."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels on the Secret."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Extra annotations on the Secret."""


class AitbcDatabaseSpec(Spec):
    """Desired state of an AITBC service database."""

    service: Service
    """The AITBC service this database is for. Drives the default database and role names (`aitbc_<service>`) and the
    environment variable written into the Secret (e.g. `MEMPOOL_DB_URL`). Immutable."""
    database_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=IDENTIFIER_MAX_BYTES,
        pattern=IDENTIFIER_PATTERN,
        json_schema_extra=validations(*_identifier_rules("databaseName", RESERVED_DATABASE_NAMES)),
    )
    """Name of the PostgreSQL database; defaults to `aitbc_<service>`. Immutable."""
    role_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=IDENTIFIER_MAX_BYTES,
        pattern=IDENTIFIER_PATTERN,
        json_schema_extra=validations(*_identifier_rules("roleName", RESERVED_ROLE_NAMES)),
    )
    """Name of the PostgreSQL login role that owns the database; defaults to `aitbc_<service>`. Immutable."""
    server: ServerSpec
    """The PostgreSQL server and the admin credentials used to manage it."""
    connection_limit: int = Field(default=-1, ge=-1, le=10000)
    """Maximum concurrent connections of the role (-1: no limit)."""
    password: PasswordSpec = Field(default_factory=PasswordSpec)
    """Password generation and rotation."""
    secret: SecretSpec = Field(default_factory=SecretSpec)
    """The connection Secret written for applications."""
    adopt: bool = False
    """Take over a role or database of these names that exists on the server without the operator's marker (e.g.
    made by hand with the runbook): the operator marks it, resets the role's password to the Secret's and makes the
    role own the database. Without it such objects are a `NameConflict`. Never applies to a role with SUPERUSER,
    REPLICATION, BYPASSRLS or CREATEROLE (or a member of such a role or of a predefined `pg_*` role), nor to a
    database owned by such a role. Only matters until the objects are marked: changing it later changes nothing."""
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    """`Retain` (default) leaves database and role in place when the resource is deleted; `Drop` terminates the
    database's connections and drops database and role (refused while another AitbcDatabase uses them)."""

    model_config = Spec.model_config | {
        "json_schema_extra": validations(
            cel("self.service == oldSelf.service", "service is immutable", field_path=".service"),
            cel(
                "has(self.databaseName) == has(oldSelf.databaseName)"
                " && (!has(self.databaseName) || self.databaseName == oldSelf.databaseName)",
                "databaseName is immutable",
                field_path=".databaseName",
            ),
            cel(
                "has(self.roleName) == has(oldSelf.roleName)"
                " && (!has(self.roleName) || self.roleName == oldSelf.roleName)",
                "roleName is immutable",
                field_path=".roleName",
            ),
            cel(
                "(has(self.secret) && has(self.secret.name)) == (has(oldSelf.secret) && has(oldSelf.secret.name))"
                " && (!(has(self.secret) && has(self.secret.name)) || self.secret.name == oldSelf.secret.name)",
                "secret.name is immutable",
                field_path=".secret.name",
            ),
        )
    }

    @field_validator("database_name")
    @classmethod
    def _check_database_name(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "databaseName", RESERVED_DATABASE_NAMES)

    @field_validator("role_name")
    @classmethod
    def _check_role_name(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "roleName", RESERVED_ROLE_NAMES)

    @property
    def effective_database_name(self) -> str:
        """The database name, defaulted from the service."""
        return self.database_name or f"aitbc_{self.service.value}"

    @property
    def effective_role_name(self) -> str:
        """The role name, defaulted from the service."""
        return self.role_name or f"aitbc_{self.service.value}"

    @property
    def url_env_var(self) -> str:
        """The service's own environment variable for the connection URL."""
        return SERVICE_URL_ENV[self.service]

    def secret_name(self, resource_name: str) -> str:
        """The output Secret's name."""
        return self.secret.name or f"{resource_name}-db"


class AitbcDatabaseStatus(Status):
    """Observed state of an AitbcDatabase, written by the operator."""

    observed_generation: int | None = None
    """The metadata.generation last reconciled."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing and Degraded, with reasons."""
    database_name: str | None = None
    """The PostgreSQL database managed (recorded at creation; names never change afterwards)."""
    role_name: str | None = None
    """The PostgreSQL login role managed."""
    secret_name: str | None = None
    """The connection Secret written for applications."""
    server: str | None = None
    """The server the database lives on, as host:port of the admin connection (used to detect two resources
    claiming the same database or role on one server)."""
    database_size_bytes: int | None = None
    """Size of the database (pg_database_size) at the last reconcile."""
    last_rotation_time: datetime | None = None
    """When the password was last set (creation or rotation)."""
    observed_rotation_token: str | None = None
    """The rotation token (spec or annotation) the current password was generated for."""
    server_version: str | None = None
    """PostgreSQL server version, e.g. 15.8."""
