"""The SQL of each planned step, composed with psycopg.sql only (Identifier / Literal), never by string formatting.

Passwords never appear here: SET_PASSWORD and CREATE_ROLE carry a SCRAM verifier computed by the operator.
"""

from __future__ import annotations

from psycopg import sql

from .plan import Action, DesiredDatabase, Step

#: Reading the world: one row, whatever exists - the admin's own attributes first (privileges are checked before any
#: DDL), then the role and the database. On PostgreSQL 16+ membership must also allow SET ROLE (the CREATEROLE
#: creator's implicit grant has ADMIN but neither INHERIT nor SET unless createrole_self_grant says so), and altering
#: an existing role needs the ADMIN option on it; PostgreSQL 15 knows neither rule (CREATEROLE reaches every
#: non-superuser role). The columns are named in OBSERVE_COLUMNS, in order; the privileged attributes are those of
#: plan.PRIVILEGED_ATTRIBUTES.
OBSERVE = sql.SQL("""
SELECT current_setting('server_version_num')::int,
       current_setting('server_version'),
       current_user::text,
       a.rolsuper, a.rolcreaterole, a.rolcreatedb, a.rolinherit,
       coalesce(current_setting('createrole_self_grant', true), ''),
       r.rolname IS NOT NULL,
       r.rolcanlogin,
       r.rolconnlimit,
       array_remove(ARRAY[CASE WHEN r.rolsuper THEN 'SUPERUSER' END, CASE WHEN r.rolreplication THEN 'REPLICATION' END,
                    CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END, CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END],
              NULL),
       r.rolvaliduntil IS NOT NULL AND r.rolvaliduntil <> 'infinity'::timestamptz,
       pg_has_role(current_user, r.oid, 'USAGE')
         AND CASE WHEN current_setting('server_version_num')::int >= 160000
                  THEN pg_has_role(current_user, r.oid, 'SET') ELSE true END,
       CASE WHEN current_setting('server_version_num')::int >= 160000
            THEN pg_has_role(current_user, r.oid, 'USAGE WITH ADMIN OPTION') ELSE true END,
       (SELECT coalesce(array_agg(b.rolname::text ORDER BY b.rolname), ARRAY[]::text[]) FROM pg_roles b
         WHERE r.oid IS NOT NULL AND b.oid <> r.oid AND pg_has_role(r.oid, b.oid, 'MEMBER')
           AND (starts_with(b.rolname, 'pg_') OR b.rolsuper OR b.rolreplication OR b.rolbypassrls
                OR b.rolcreaterole)),
       shobj_description(r.oid, 'pg_authid'),
       d.datname IS NOT NULL,
       pg_get_userbyid(d.datdba)::text,
       shobj_description(d.oid, 'pg_database'),
       CASE WHEN has_database_privilege(d.oid, 'CONNECT') THEN pg_database_size(d.oid) END,
       array_remove(ARRAY[CASE WHEN o.rolsuper THEN 'SUPERUSER' END, CASE WHEN o.rolreplication THEN 'REPLICATION' END,
                    CASE WHEN o.rolbypassrls THEN 'BYPASSRLS' END, CASE WHEN o.rolcreaterole THEN 'CREATEROLE' END],
              NULL),
       pg_has_role(current_user, d.datdba, 'USAGE')
FROM pg_roles a
LEFT JOIN pg_roles r ON r.rolname = %(role)s
LEFT JOIN pg_database d ON d.datname = %(database)s
LEFT JOIN pg_roles o ON o.oid = d.datdba
WHERE a.rolname = current_user
""")
OBSERVE_COLUMNS = (
    "version_num", "version", "admin", "admin_superuser", "admin_createrole", "admin_createdb", "admin_inherit",
    "self_grant", "role_exists", "can_login", "connection_limit", "role_attributes", "expires", "admin_can_use",
    "admin_option", "privileged_memberships", "role_marker", "database_exists", "database_owner", "database_marker",
    "size", "owner_attributes", "admin_is_owner",
)

DATABASE_SIZE = sql.SQL("SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s")
SERVER_VERSION = sql.SQL("SELECT current_setting('server_version')")


def statement(step: Step, desired: DesiredDatabase, verifier: str | None) -> sql.Composed:
    """The one SQL statement of a step. ``verifier`` is required for CREATE_ROLE and SET_PASSWORD."""
    role = sql.Identifier(desired.role)
    database = sql.Identifier(desired.database)
    match step.action:
        case Action.CREATE_ROLE:
            return sql.SQL(
                "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT {} PASSWORD {}"
            ).format(role, sql.Literal(desired.connection_limit), sql.Literal(_require(verifier)))
        case Action.MARK_ROLE:
            return sql.SQL("COMMENT ON ROLE {} IS {}").format(role, sql.Literal(desired.marker))
        case Action.GRANT_ROLE_TO_ADMIN:
            # Membership (with SET and INHERIT, the defaults) lets a CREATEROLE admin create a database owned by the
            # role, give it ownership back, and drop it: "must be member of role" (15) / "able to SET ROLE" (16+).
            return sql.SQL("GRANT {} TO CURRENT_USER").format(role)
        case Action.ENABLE_LOGIN:
            return sql.SQL("ALTER ROLE {} WITH LOGIN").format(role)
        case Action.SET_CONNECTION_LIMIT:
            return sql.SQL("ALTER ROLE {} WITH CONNECTION LIMIT {}").format(role,
                                                                           sql.Literal(desired.connection_limit))
        case Action.CLEAR_EXPIRY:
            return sql.SQL("ALTER ROLE {} WITH VALID UNTIL 'infinity'").format(role)
        case Action.SET_PASSWORD:
            return sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(role, sql.Literal(_require(verifier)))
        case Action.CREATE_DATABASE:
            return sql.SQL("CREATE DATABASE {} OWNER {}").format(database, role)
        case Action.SET_DATABASE_OWNER:
            return sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, role)
        case Action.MARK_DATABASE:
            return sql.SQL("COMMENT ON DATABASE {} IS {}").format(database, sql.Literal(desired.marker))
        case Action.DROP_DATABASE:
            return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database)
        case Action.DROP_ROLE:
            return sql.SQL("DROP ROLE IF EXISTS {}").format(role)
    raise AssertionError(f"unhandled action {step.action}")  # pragma: no cover


def _require(verifier: str | None) -> str:
    if verifier is None:
        raise ValueError("this step sets a password: a verifier is required")
    return verifier
