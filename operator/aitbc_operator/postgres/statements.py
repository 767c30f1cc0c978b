"""The SQL of each planned step, composed with psycopg.sql only (Identifier / Literal), never by string formatting.

Passwords never appear here: SET_PASSWORD and CREATE_ROLE carry a SCRAM verifier computed by the operator.
"""

from __future__ import annotations

from psycopg import sql

from .plan import CONTENT_ACTIONS, Action, DesiredDatabase, Step

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


#: The aux roles (logins, read-only role) of a resource, in the order of OBSERVE_AUX_COLUMNS; one row per name.
OBSERVE_AUX = sql.SQL("""
SELECT n.name,
       r.rolname IS NOT NULL,
       coalesce(r.rolcanlogin, false),
       coalesce(r.rolconnlimit, -1),
       coalesce(r.rolvaliduntil IS NOT NULL AND r.rolvaliduntil <> 'infinity'::timestamptz, false),
       shobj_description(r.oid, 'pg_authid'),
       coalesce(o.oid IS NOT NULL AND r.oid IS NOT NULL AND pg_has_role(r.oid, o.oid, 'MEMBER'), false),
       (SELECT substr(c, 6) FROM pg_db_role_setting s, unnest(s.setconfig) c
         WHERE s.setrole = r.oid AND s.setdatabase = 0 AND starts_with(c, 'role=')),
       CASE WHEN r.oid IS NULL THEN true
            WHEN current_setting('server_version_num')::int >= 160000
            THEN pg_has_role(current_user, r.oid, 'USAGE WITH ADMIN OPTION') ELSE true END,
       coalesce(r.rolsuper, false)
FROM unnest(%(names)s::text[]) AS n(name)
LEFT JOIN pg_roles r ON r.rolname = n.name
LEFT JOIN pg_roles o ON o.rolname = %(owner)s
""")
OBSERVE_AUX_COLUMNS = ("name", "exists", "can_login", "connection_limit", "expires", "marker", "member_of_owner",
                       "acts_as", "admin_option", "superuser")

#: What the server offers for the listed extensions (read on the admin connection: the same in every database).
AVAILABLE_EXTENSIONS = sql.SQL("""
SELECT v.name::text, v.version::text, v.superuser, v.trusted, a.default_version::text
FROM pg_available_extension_versions v JOIN pg_available_extensions a ON a.name = v.name
WHERE v.name = ANY(%(names)s::text[])
""")
#: Inside the database: installed extensions (name, version, owner).
CONTENT_EXTENSIONS = sql.SQL("SELECT extname::text, extversion, pg_get_userbyid(extowner)::text FROM pg_extension")
#: Inside the database: schemas (name, owner), system schemas left out.
CONTENT_SCHEMAS = sql.SQL("""
SELECT nspname::text, pg_get_userbyid(nspowner)::text FROM pg_namespace
WHERE NOT starts_with(nspname, 'pg_') AND nspname <> 'information_schema'
""")
#: Inside the database: what the read-only role may do (CONNECT; schemas with USAGE; schemas holding an owner's
#: table it cannot read; the owner's default SELECT grant).
CONTENT_READ_ONLY = sql.SQL("""
SELECT has_database_privilege(%(ro)s, current_database(), 'CONNECT'),
       ARRAY(SELECT nspname::text FROM pg_namespace WHERE has_schema_privilege(%(ro)s, oid, 'USAGE')),
       ARRAY(SELECT DISTINCT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND pg_get_userbyid(c.relowner) = %(owner)s
                AND NOT has_table_privilege(%(ro)s, c.oid, 'SELECT')),
       EXISTS (SELECT 1 FROM pg_default_acl d, aclexplode(d.defaclacl) a
                WHERE pg_get_userbyid(d.defaclrole) = %(owner)s AND d.defaclnamespace = 0 AND d.defaclobjtype = 'r'
                  AND pg_get_userbyid(a.grantee) = %(ro)s AND a.privilege_type = 'SELECT')
""")


def statement(step: Step, desired: DesiredDatabase, verifier: str | None) -> sql.Composed:
    """The one SQL statement of a step. ``verifier`` is required for CREATE_ROLE (of a login) and SET_PASSWORD.

    A step with ``step.role`` concerns that role (a login, the read-only role); otherwise the owner role.
    """
    if step.action in CONTENT_ACTIONS:
        return content_statement(step, desired)
    role = sql.Identifier(step.role or desired.role)
    database = sql.Identifier(desired.database)
    match step.action:
        case Action.CREATE_ROLE:
            login = desired.owner_login if step.role is None else (
                step.role in desired.logins or desired.read_only_login)
            password = sql.Literal(verifier) if verifier is not None else sql.SQL("NULL")
            if login and step.role is None and verifier is None:
                password = sql.Literal(_require(verifier))
            return sql.SQL(
                "CREATE ROLE {} WITH {} NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT {} PASSWORD {}"
            ).format(role, sql.SQL("LOGIN" if login else "NOLOGIN"), sql.Literal(desired.connection_limit),
                     password)
        case Action.DISABLE_LOGIN:
            return sql.SQL("ALTER ROLE {} WITH NOLOGIN").format(role)
        case Action.CLEAR_PASSWORD:
            return sql.SQL("ALTER ROLE {} WITH PASSWORD NULL").format(role)
        case Action.GRANT_MEMBERSHIP:
            return sql.SQL("GRANT {} TO {}").format(sql.Identifier(desired.role), role)
        case Action.SET_ACTS_AS:
            return sql.SQL("ALTER ROLE {} SET role = {}").format(role, sql.Literal(desired.role))
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


def content_statement(step: Step, desired: DesiredDatabase) -> sql.Composed:
    """The statement of a step inside the database (run after ``SET ROLE`` to the owner role)."""
    target = sql.Identifier(step.target or "")
    ro = sql.Identifier(step.role or "")
    match step.action:
        case Action.CREATE_EXTENSION:
            version = sql.SQL(" VERSION {}").format(sql.Literal(step.version)) if step.version else sql.SQL("")
            return sql.SQL("CREATE EXTENSION IF NOT EXISTS {}{}").format(target, version)
        case Action.UPDATE_EXTENSION:
            return sql.SQL("ALTER EXTENSION {} UPDATE TO {}").format(target, sql.Literal(step.version))
        case Action.DROP_EXTENSION:
            return sql.SQL("DROP EXTENSION IF EXISTS {}").format(target)
        case Action.CREATE_SCHEMA:
            return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(target)
        case Action.DROP_SCHEMA:
            return sql.SQL("DROP SCHEMA IF EXISTS {}").format(target)
        case Action.GRANT_CONNECT:
            return sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(desired.database), ro)
        case Action.GRANT_USAGE:
            return sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(target, ro)
        case Action.GRANT_SELECT:
            return sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(target, ro)
        case Action.DEFAULT_PRIVILEGES:
            return sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT SELECT ON TABLES TO {}").format(
                sql.Identifier(desired.role), ro)
    raise AssertionError(f"unhandled action {step.action}")  # pragma: no cover


def set_role(role: str) -> sql.Composed:
    """``SET ROLE <role>``."""
    return sql.SQL("SET ROLE {}").format(sql.Identifier(role))


def _require(verifier: str | None) -> str:
    if verifier is None:
        raise ValueError("this step sets a password: a verifier is required")
    return verifier
