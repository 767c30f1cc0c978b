"""Decide, purely, what to change inside the database: extensions, schemas and the read-only role's grants.

Everything here runs as the database's owner role (``SET ROLE``) on a short-lived connection to the database, so the
operator never does more inside an author's database than its owner could. Privileges first: an extension that only a
superuser can create is refused (InsufficientPrivilege) before any statement runs, from ``pg_available_extension_
versions`` read on the admin connection, so on a first creation even before the database exists.

Objects the owner does not own are never changed: a schema of a listed name owned by another role, an extension
another role installed, are a NameConflict when the spec asks to change or drop them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import InsufficientPrivilege, InvalidSpec, NameConflict
from .plan import Action, AdminState, DesiredDatabase, DesiredExtension, Step


@dataclass(frozen=True)
class ExtensionVersion:
    """One row of pg_available_extension_versions."""

    version: str
    superuser: bool
    trusted: bool


@dataclass(frozen=True)
class Availability:
    """What the server offers for the listed extensions: name -> default version and every version."""

    default_versions: Mapping[str, str] = field(default_factory=dict)
    versions: Mapping[str, Mapping[str, ExtensionVersion]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadOnlyState:
    """What the read-only role may do in the database."""

    connect: bool
    usage: frozenset[str]
    """Schemas it has USAGE on."""
    tables_without_select: frozenset[str]
    """Schemas holding a table of the owner's it cannot SELECT."""
    default_select: bool
    """The owner's default privileges give it SELECT on future tables."""


@dataclass(frozen=True)
class ContentsState:
    """A snapshot of the database's contents as far as the spec is concerned."""

    extensions: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Installed extension -> (version, owner)."""
    schemas: Mapping[str, str] = field(default_factory=lambda: {"public": "pg_database_owner"})
    """Schema -> owner (system schemas left out)."""
    read_only: ReadOnlyState | None = None


#: A database just created from template1 holds only these.
EMPTY = ContentsState()


def check_available(availability: Availability, admin: AdminState, desired: DesiredDatabase,
                    installed: Mapping[str, tuple[str, str]]) -> None:
    """Every present extension the database lacks is offered by the server and creatable by its owner."""
    for ext in desired.extensions:
        if not ext.present or (ext.name in installed and ext.version in (None, installed[ext.name][0])):
            continue
        offered = availability.versions.get(ext.name)
        if not offered:
            raise InvalidSpec(f"extension {ext.name} is not available on this server (pg_available_extensions): "
                              "nothing was changed")
        version = ext.version or availability.default_versions[ext.name]
        row = offered.get(version)
        if row is None:
            raise InvalidSpec(f"extension {ext.name} has no version {version} on this server (it offers "
                              f"{', '.join(sorted(offered))}): nothing was changed")
        if row.superuser and not row.trusted and not admin.superuser:
            raise InsufficientPrivilege(
                f"extension {ext.name} is not trusted: only a superuser can create it, not the database owner "
                f"{desired.role} (a superuser can run CREATE EXTENSION {ext.name} in database {desired.database} "
                "once; the operator then leaves it alone): nothing was changed")


def plan_contents(state: ContentsState, desired: DesiredDatabase) -> tuple[Step, ...]:
    """The steps inside the database, in order: schemas, extensions, then the read-only grants."""
    steps = [*_schema_steps(state, desired), *_extension_steps(state, desired)]
    if desired.read_only and desired.read_only_login:
        steps.extend(_read_only_steps(state, desired))
    return tuple(steps)


def _schema_steps(state: ContentsState, desired: DesiredDatabase) -> list[Step]:
    steps = []
    for schema in desired.schemas:
        owner = state.schemas.get(schema.name)
        if schema.present and owner is None:
            steps.append(Step(Action.CREATE_SCHEMA, f"schema {schema.name} created, owned by {desired.role}",
                              target=schema.name))
        elif owner is not None and owner != desired.role:
            raise NameConflict(f"schema {schema.name} in database {desired.database} is owned by {owner}, not by "
                               f"{desired.role}: not taken over")
        elif not schema.present and owner is not None:
            steps.append(Step(Action.DROP_SCHEMA, f"schema {schema.name} dropped", target=schema.name))
    return steps


def _extension_steps(state: ContentsState, desired: DesiredDatabase) -> list[Step]:
    steps = []
    for ext in desired.extensions:
        installed = state.extensions.get(ext.name)
        if ext.present and installed is None:
            steps.append(Step(Action.CREATE_EXTENSION, _created(ext), target=ext.name, version=ext.version))
            continue
        if installed is None:
            continue
        version, owner = installed
        wants_change = (not ext.present) or (ext.version is not None and ext.version != version)
        if wants_change and owner != desired.role:
            raise NameConflict(f"extension {ext.name} in database {desired.database} belongs to {owner}, not to "
                               f"{desired.role}: not changed")
        if not ext.present:
            steps.append(Step(Action.DROP_EXTENSION, f"extension {ext.name} dropped", target=ext.name))
        elif wants_change:
            steps.append(Step(Action.UPDATE_EXTENSION, f"extension {ext.name} updated from {version} to "
                              f"{ext.version}", target=ext.name, version=ext.version))
    return steps


def _created(ext: DesiredExtension) -> str:
    return f"extension {ext.name} created" + (f" (version {ext.version})" if ext.version else "")


def read_only_schemas(state: ContentsState, desired: DesiredDatabase) -> tuple[str, ...]:
    """The schemas the read-only role reads: public, the owner's, the listed present ones (not the absent ones)."""
    listed_absent = {s.name for s in desired.schemas if not s.present}
    names = {"public", *(n for n, owner in state.schemas.items() if owner == desired.role),
             *(s.name for s in desired.schemas if s.present)}
    return tuple(sorted(names - listed_absent))


def _read_only_steps(state: ContentsState, desired: DesiredDatabase) -> list[Step]:
    ro = desired.read_only
    assert ro is not None
    current = state.read_only or ReadOnlyState(False, frozenset(), frozenset(), False)
    made_before = state.read_only is not None
    steps = []
    if not current.connect:
        steps.append(Step(Action.GRANT_CONNECT, f"{ro} may connect to database {desired.database}", role=ro,
                          drift=made_before))
    for schema in read_only_schemas(state, desired):
        if schema not in current.usage:
            steps.append(Step(Action.GRANT_USAGE, f"{ro} may use schema {schema}", role=ro, target=schema,
                              drift=made_before and schema in state.schemas and schema == "public"))
        if schema in current.tables_without_select:
            steps.append(Step(Action.GRANT_SELECT, f"{ro} may read every table in schema {schema}", role=ro,
                              target=schema, drift=made_before))
    if not current.default_select:
        steps.append(Step(Action.DEFAULT_PRIVILEGES, f"{ro} may read the tables {desired.role} creates later",
                          role=ro, drift=made_before))
    return steps
