"""The AitbcDatabase custom resource: one PostgreSQL database, its owning login role and a connection Secret."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .. import schedules
from .base import (
    DNS_LABEL_PATTERN,
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
from .rules import IMAGE_REFERENCE, IMAGE_REFERENCE_MESSAGE, cel_list, cel_string, is_image_reference
from .secret_templates import (
    TEMPLATE_KEY_PATTERN,
    TEMPLATE_MAX_KEYS,
    TEMPLATE_MAX_LENGTH,
    TEMPLATE_MESSAGE,
    TEMPLATE_PATTERN,
    check_template,
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

#: Keys of the connection Secret the operator writes itself (templates may not name them).
RESERVED_SECRET_KEYS = (
    "DATABASE_URL", *sorted(set(SERVICE_URL_ENV.values()) - {"DATABASE_URL"}), "DATABASE_ADAPTER", "uri", "host",
    "port", "database", "username", "password", "sslmode", "sslrootcert", "ca.crt",
)


def _optional(root: str, parent: str, field: str, default: str) -> str:
    """CEL: ``root.parent.field`` when set, else ``default`` (for transition rules on optional nested fields)."""
    return f"(has({root}.{parent}) && has({root}.{parent}.{field}) ? {root}.{parent}.{field} : {default})"


def _immutable(parent: str, field: str, default: str, message: str) -> dict[str, str]:
    """The transition rule keeping an optional nested field as it was (unset counts as ``default``)."""
    return cel(_optional("self", parent, field, default) + " == " + _optional("oldSelf", parent, field, default),
               message, field_path=f".{parent}.{field}")


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


class RotationStrategy(StrEnum):
    """How a new password reaches the applications."""

    IN_PLACE = "InPlace"
    """One login role (the runbook's): the Secret gets the new password, then the role. Applications that read the
    old Secret fail to open new connections until they are restarted with the new one."""
    ALTERNATING_ROLES = "AlternatingRoles"
    """Two login roles `<role>_a` and `<role>_b`, members of the NOLOGIN role `<role>` that owns the database: the
    Secret switches to the other login, the consumers roll, and the old login's password is removed only once every
    consumer runs on the new Secret (or after `gracePeriod`). Nothing fails mid-rotation."""


class PasswordSpec(Spec):
    """How the role's password is generated and rotated."""

    length: int = Field(default=32, ge=16, le=128)
    """Number of characters of the generated password (from a cryptographic generator)."""
    rotation_period: str | None = Field(default=None, pattern=DURATION_PATTERN, max_length=32)
    """Rotate the password automatically this long after the last rotation, e.g. `720h`. Unset: never on a schedule."""
    rotation_token: str | None = Field(default=None, max_length=253)
    """Change this value (any string, e.g. a date) to rotate the password now. The annotation
    `aitbc.io/rotate-password` does the same without editing the spec."""
    rotation_strategy: RotationStrategy = RotationStrategy.IN_PLACE
    """`InPlace` (default, one login role) or `AlternatingRoles` (two login roles, no failed connection during a
    rotation; see docs/database-operations.md). Immutable: it decides which roles exist."""
    grace_period: str = Field(default="15m", pattern=DURATION_PATTERN, max_length=32)
    """AlternatingRoles: the longest the previous login keeps its password after a switch when not every consumer
    runs on the new Secret by then (e.g. a consumer that does not roll). Without consumers, the previous login is
    retired after this period."""


class SecretSpec(Spec):
    """The output Secret holding the connection details."""

    name: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the Secret; defaults to `<metadata.name>-db`. Immutable."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels on the Secret."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Extra annotations on the Secret."""
    templates: dict[str, str] = Field(
        default_factory=dict, max_length=TEMPLATE_MAX_KEYS,
        json_schema_extra={
            "additionalProperties": {"type": "string", "maxLength": TEMPLATE_MAX_LENGTH},
            **validations(
                cel(f"self.all(k, self[k].matches({cel_string(TEMPLATE_PATTERN)}))", TEMPLATE_MESSAGE),
                cel(f"self.all(k, k.size() <= 253 && k.matches({cel_string(TEMPLATE_KEY_PATTERN)}))",
                    "template keys must be Secret keys: letters, digits, '-', '_' and '.', at most 253"),
                cel(f"self.all(k, !(k in {cel_list(list(RESERVED_SECRET_KEYS))}))",
                    "template keys must not be keys the operator writes: " + ", ".join(RESERVED_SECRET_KEYS)),
            ),
        },
    )
    """Extra keys, each rendered from a template with the variables `{{ .user }}`, `{{ .password }}`,
    `{{ .host }}`, `{{ .port }}`, `{{ .database }}`, `{{ .sslmode }}` and the filters `| urlescape` (percent-encoded
    for URLs) and `| pgpass` (escaped for a .pgpass line), e.g.
    `ASYNC_URL: postgresql+asyncpg://{{ .user | urlescape }}:{{ .password | urlescape }}@{{ .host }}:{{ .port }}/{{
    .database }}`. The read-only Secret gets the same keys with the read-only role's values."""

    @field_validator("templates")
    @classmethod
    def _check_templates(cls, value: dict[str, str]) -> dict[str, str]:
        for key, template in value.items():
            check_template(key, template)
            if key in RESERVED_SECRET_KEYS:
                raise ValueError(f"secret.templates key {key!r} is a key the operator writes")
        return value


class ReadOnlySpec(Spec):
    """A login role that can read the database and nothing else, with a Secret of its own."""

    enabled: bool = False
    """Create the read-only role and its Secret. Setting it back to false removes the role's LOGIN (the Secret and
    the role stay, unusable)."""
    role_name: str | None = Field(
        default=None, min_length=1, max_length=IDENTIFIER_MAX_BYTES, pattern=IDENTIFIER_PATTERN,
        json_schema_extra=validations(*_identifier_rules("readOnly.roleName", RESERVED_ROLE_NAMES)),
    )
    """Name of the read-only login role; defaults to `<roleName>_ro`. Immutable."""
    secret_name: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of its Secret (the same keys as the connection Secret); defaults to `<metadata.name>-db-readonly`.
    Immutable."""

    @field_validator("role_name")
    @classmethod
    def _check_role_name(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "readOnly.roleName", RESERVED_ROLE_NAMES)


class Ensure(StrEnum):
    """Whether an extension or schema must exist."""

    PRESENT = "Present"
    ABSENT = "Absent"


#: Extension names as PostgreSQL ships them (``uuid-ossp`` has a hyphen).
EXTENSION_NAME_PATTERN = r"^[a-z_][a-z0-9_-]*$"
RESERVED_SCHEMA_NAMES = ("public", "information_schema")


class ExtensionSpec(Spec):
    """A PostgreSQL extension in the database, created as the database's owner."""

    name: str = Field(min_length=1, max_length=IDENTIFIER_MAX_BYTES, pattern=EXTENSION_NAME_PATTERN)
    """Extension name, e.g. `pgcrypto`, `citext`, `pg_trgm`. Only trusted extensions can be created by the owner;
    others are `Degraded/InsufficientPrivilege` (a superuser creates them once, then the operator leaves them
    alone)."""
    version: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    """Version to install or update to (`ALTER EXTENSION ... UPDATE TO`); default: the server's default version,
    and an installed one is left at its version."""
    ensure: Ensure = Ensure.PRESENT
    """`Present` (created and re-created when dropped by hand) or `Absent` (dropped, only if no object depends on
    it). An extension removed from the list is left alone."""


class SchemaSpec(Spec):
    """A schema in the database, owned by the database's owner role."""

    name: str = Field(
        min_length=1, max_length=IDENTIFIER_MAX_BYTES, pattern=IDENTIFIER_PATTERN,
        json_schema_extra=validations(*_identifier_rules("schema name", RESERVED_SCHEMA_NAMES)),
    )
    """Schema name (not `public`, `information_schema` or `pg_*`)."""
    ensure: Ensure = Ensure.PRESENT
    """`Present` (created, re-created when dropped by hand) or `Absent` (dropped if empty). A schema removed from
    the list is left alone."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_identifier(value, "schema name", RESERVED_SCHEMA_NAMES)


class ConsumerKind(StrEnum):
    """The workloads that can consume a connection Secret."""

    DEPLOYMENT = "Deployment"
    STATEFULSET = "StatefulSet"


LABEL_KEY_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


class LabelSelector(Spec):
    """Workloads by their labels (all must match)."""

    match_labels: dict[str, str] = Field(
        min_length=1, max_length=16,
        json_schema_extra={"additionalProperties": {"type": "string", "maxLength": 63}},
    )
    """Label key -> value; a workload matches when it has all of them. (Checked by the operator, InvalidSpec: a CEL
    rule over map keys of unbounded length exceeds the apiserver's cost budget.)"""

    @field_validator("match_labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if len(key) > 317 or not re.fullmatch(LABEL_KEY_PATTERN, key) or len(label) > 63 or not re.fullmatch(
                    LABEL_VALUE_PATTERN, label):
                raise ValueError(f"selector.matchLabels {key}={label!r} is not a valid label")
        return value

    def as_selector(self) -> str:
        """The labelSelector query parameter, e.g. ``app=exchange,tier=api``."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.match_labels.items()))


class ConsumerSpec(Spec):
    """Workloads in the namespace that read the connection Secret: rolled when it changes."""

    kind: ConsumerKind
    """Deployment or StatefulSet."""
    name: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """The workload's name."""
    selector: LabelSelector | None = None
    """Or: every workload of this kind whose labels match."""

    model_config = Spec.model_config | {
        "json_schema_extra": validations(
            cel("has(self.name) != has(self.selector)", "set exactly one of name or selector")
        )
    }

    @model_validator(mode="after")
    def _one_of(self) -> ConsumerSpec:
        if (self.name is None) == (self.selector is None):
            raise ValueError("consumers: set exactly one of name or selector")
        return self


#: Cron schedules as the CronJob controller reads them: five fields, or a macro; then schedules.check (cronsim).
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*/,?-]+( [0-9A-Za-z*/,?-]+){4})$"
#: Dump files in the backup volume: a plain file name (no directory, no leading dot).
DUMP_FILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class BackupSpec(Spec):
    """Scheduled `pg_dump --format=custom` of the database into a volume, as the database's own role."""

    schedule: str = Field(min_length=1, max_length=64, pattern=CRON_PATTERN)
    """Cron schedule in UTC, e.g. `0 3 * * *` or `@daily`."""
    keep: int = Field(default=7, ge=1, le=100)
    """How many scheduled dumps to keep in the volume (the oldest are removed after a successful one; pre-restore
    dumps are never removed)."""
    claim_name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """The PersistentVolumeClaim (same namespace, made by you) the dumps are written to, as
    `<database>-<UTC time>.dump`."""
    image: str | None = Field(
        default=None, max_length=512,
        json_schema_extra=validations(
            cel(f"self.matches({cel_string(IMAGE_REFERENCE)})", f"backup.image {IMAGE_REFERENCE_MESSAGE}")),
    )
    """Image with `pg_dump` and `pg_restore` (and a POSIX shell); its pg_dump's major must be at least the
    server's. Default: the official `postgres:<major>` image of the server's major (`status.serverVersion`)."""
    suspend: bool = False
    """Pause the schedule (on-demand dumps still run). The operator also suspends it while a restore runs."""

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        try:
            if not re.fullmatch(CRON_PATTERN, value):
                raise ValueError("five fields, or e.g. @daily")
            return schedules.check(value)
        except ValueError as exc:
            raise ValueError(f"backup.schedule {value!r} is not a cron schedule ({exc})") from None

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str | None) -> str | None:
        if value is not None and not is_image_reference(value):
            raise ValueError(f"backup.image {value!r} {IMAGE_REFERENCE_MESSAGE}")
        return value


class RestoreSpec(Spec):
    """A request to restore the database from a dump in the backup volume (done once per request name)."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)
    """Name of this request; a new name is a new restore. The outcome is in `status.restore`."""
    file: str = Field(min_length=1, max_length=255, pattern=DUMP_FILE_PATTERN)
    """The dump to restore: a file name in the backup volume, e.g. `aitbc_mempool-20261201T030000Z.dump`."""
    stop_consumers: bool = True
    """Scale the consumers to zero for the restore and back to their replicas after it (default). With false
    they keep running (and may see the database mid-restore)."""


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
    consumers: list[ConsumerSpec] = Field(default_factory=list, max_length=32)
    """Deployments and StatefulSets (same namespace) that use the connection Secret: after the Secret changes, the
    operator stamps its hash on their pod templates (`aitbc.io/secret-hash-<name>`), so they roll once per change.
    They are not owned or otherwise changed."""
    read_only: ReadOnlySpec = Field(default_factory=ReadOnlySpec)
    """A read-only login role (CONNECT, USAGE on the schemas, SELECT on every table, also those the owner creates
    later) with a Secret of its own."""
    extensions: list[ExtensionSpec] = Field(
        default_factory=list, max_length=32,
        json_schema_extra=validations(cel("self.all(e, self.exists_one(f, f.name == e.name))",
                                          "extension names must be unique")),
    )
    """Extensions in the database, created as its owner."""
    schemas: list[SchemaSpec] = Field(
        default_factory=list, max_length=32,
        json_schema_extra=validations(cel("self.all(e, self.exists_one(f, f.name == e.name))",
                                          "schema names must be unique")),
    )
    """Schemas in the database, owned by the owner role."""
    backup: BackupSpec | None = None
    """Scheduled dumps (a CronJob `<name>-backup`); on demand with the annotation `aitbc.io/backup-now: <token>`."""
    restore: RestoreSpec | None = None
    """A restore request naming a dump in the backup volume (needs `backup`)."""

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
            _immutable("password", "rotationStrategy", "'InPlace'",
                       "password.rotationStrategy is immutable (it decides which roles exist)"),
            cel(
                "!(has(self.password) && has(self.password.rotationStrategy)"
                " && self.password.rotationStrategy == 'AlternatingRoles') || !has(self.roleName)"
                " || self.roleName.size() <= 61",
                "roleName must be at most 61 characters with AlternatingRoles (the logins are <roleName>_a and _b)",
                field_path=".roleName",
            ),
            _immutable("readOnly", "roleName", "''", "readOnly.roleName is immutable"),
            _immutable("readOnly", "secretName", "''", "readOnly.secretName is immutable"),
            cel("!has(self.restore) || has(self.backup)", "restore needs backup (the volume holding the dumps)",
                field_path=".restore"),
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

    @property
    def alternating(self) -> bool:
        """Whether the password rotates by switching between two login roles."""
        return self.password.rotation_strategy is RotationStrategy.ALTERNATING_ROLES

    @property
    def login_roles(self) -> tuple[str, str] | None:
        """AlternatingRoles: the two login roles (``<role>_a``, ``<role>_b``); None for InPlace."""
        role = self.effective_role_name
        return (f"{role}_a", f"{role}_b") if self.alternating else None

    @property
    def read_only_role(self) -> str | None:
        """The read-only role's name (None when not enabled)."""
        if not self.read_only.enabled:
            return None
        return self.read_only.role_name or f"{self.effective_role_name}_ro"

    def read_only_secret_name(self, resource_name: str) -> str:
        """The read-only Secret's name."""
        return self.read_only.secret_name or f"{resource_name}-db-readonly"

    def managed_roles(self) -> tuple[str, ...]:
        """Every role name this resource claims on the server: the owner, its logins, the read-only role."""
        return (self.effective_role_name, *(self.login_roles or ()),
                *((self.read_only.role_name or f"{self.effective_role_name}_ro",) if self.read_only.enabled
                  or self.read_only.role_name else ()))

    @model_validator(mode="after")
    def _derived_names(self) -> AitbcDatabaseSpec:
        """The derived role names must be identifiers too, and distinct."""
        roles = self.managed_roles()
        for role in roles[1:]:
            check_identifier(role, "derived role name", RESERVED_ROLE_NAMES)
        if len(set(roles)) != len(roles):
            raise ValueError(f"readOnly.roleName must differ from the owner and login roles ({', '.join(roles)})")
        if self.read_only.secret_name is not None and self.read_only.secret_name == self.secret.name:
            raise ValueError("readOnly.secretName must differ from secret.name")
        return self


class ConsumerStatus(Status):
    """One consuming workload."""

    kind: str
    """Deployment or StatefulSet."""
    name: str
    """Its name."""
    applied_hash: str | None = None
    """The Secret hash stamped on its pod template."""
    current: bool = False
    """Every pod runs the template with the current Secret hash (the rollout is complete)."""
    found: bool = True
    """The workload exists (a named consumer may not)."""


class RotationPhase(StrEnum):
    """AlternatingRoles rotation phases (persisted values: never renamed)."""

    IDLE = "Idle"
    """One login is in use; the other has no password."""
    SWITCHED = "Switched"
    """The Secret holds the new login; the previous one keeps its password until the consumers run on the new
    Secret or the grace period ends."""


class RotationStatus(Status):
    """State of the AlternatingRoles rotation."""

    phase: RotationPhase = RotationPhase.IDLE
    """Idle or Switched."""
    active_login: str | None = None
    """The login role the Secret holds."""
    previous_login: str | None = None
    """Switched: the login still holding its password, retired when the consumers are current."""
    switched_at: datetime | None = None
    """When the Secret switched logins."""


class ReadOnlyStatus(Status):
    """The read-only role."""

    role_name: str
    """The read-only login role."""
    secret_name: str
    """Its Secret."""
    login: bool = True
    """Whether it may log in (false once readOnly.enabled is set back to false)."""


class BackupStatus(Status):
    """Outcome of the dumps."""

    cron_job: str | None = None
    """The CronJob running the scheduled dumps."""
    image: str | None = None
    """The image the dumps run with."""
    last_job: str | None = None
    """The last finished dump Job whose outcome is recorded here."""
    last_success_time: datetime | None = None
    """When the last successful dump finished."""
    last_file: str | None = None
    """The file it wrote in the backup volume."""
    last_size_bytes: int | None = None
    """Its size."""
    last_failure_time: datetime | None = None
    """When the last failed dump finished."""
    last_failure_message: str | None = None
    """Why it failed."""
    next_schedule_time: datetime | None = None
    """When the next scheduled dump starts (none while suspended)."""
    observed_on_demand_token: str | None = None
    """The value of the aitbc.io/backup-now annotation last acted on."""
    on_demand_job: str | None = None
    """The Job made for that token."""


class RestorePhase(StrEnum):
    """Restore phases (persisted values: never renamed)."""

    VERIFYING = "Verifying"
    STOPPING_CONSUMERS = "StoppingConsumers"
    PRE_RESTORE_DUMP = "PreRestoreDump"
    RESTORING = "Restoring"
    STARTING_CONSUMERS = "StartingConsumers"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class HeldReplicas(Status):
    """A consumer scaled to zero for a restore, and the replicas it gets back."""

    kind: str
    """Deployment or StatefulSet."""
    name: str
    """Its name."""
    replicas: int
    """Its replicas before the restore (given back after it)."""


class RestoreStatus(Status):
    """State of the last restore request."""

    name: str
    """The request's name (spec.restore.name)."""
    file: str
    """The dump being restored."""
    phase: RestorePhase
    """Verifying, StoppingConsumers, PreRestoreDump, Restoring, StartingConsumers, Succeeded or Failed."""
    message: str | None = None
    """What happened last (on failure: why)."""
    error: str | None = None
    """Set when a step failed: the consumers are brought back, then the phase is Failed."""
    started_at: datetime | None = None
    """When the request was taken up."""
    finished_at: datetime | None = None
    """When it reached Succeeded or Failed."""
    pre_restore_file: str | None = None
    """The dump taken just before the restore."""
    held: list[HeldReplicas] = Field(default_factory=list)
    """Consumers scaled to zero, with their replicas before."""

    @property
    def is_done(self) -> bool:
        """Succeeded or Failed: nothing more happens for this request."""
        return self.phase in (RestorePhase.SUCCEEDED, RestorePhase.FAILED)


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
    secret_hash: str | None = None
    """Canonical hash of the connection Secret's data as last written (what the consumers are rolled to)."""
    consumers: list[ConsumerStatus] = Field(default_factory=list)
    """Each consumer and whether it runs on the current Secret."""
    rotation: RotationStatus | None = None
    """AlternatingRoles: which login the Secret holds, and a switch waiting for the consumers."""
    read_only: ReadOnlyStatus | None = None
    """The read-only role and its Secret."""
    scram_salts: dict[str, str] | None = None
    """Per role whose password the operator set: the iteration count and salt of its SCRAM-SHA-256 verifier
    (``4096:<base64>``). Not secret (the server sends both to any client starting a login as the role): the drift
    checks derive the role's SCRAM keys from them once, then log in without the password's PBKDF2."""
    backup: BackupStatus | None = None
    """The last scheduled and on-demand dumps."""
    restore: RestoreStatus | None = None
    """The last restore request and its phase."""
