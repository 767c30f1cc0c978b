"""Everything that talks SQL to a PostgreSQL server (psycopg 3; identifiers and literals via psycopg.sql).

The API the handlers use::

    pool = ServerPool()                                   # once, at operator startup (kopf memo); pool.aclose()
    info = parse_admin_secret(secret_data, sslmode=..., ca_path=...)
    desired = DesiredDatabase.from_spec(spec, namespace=ns, name=name)
    prepared = await prepare(pool, info, desired, password=pw)   # read-only: observe, plan, privileges checked
    result = await execute(pool, info, desired, prepared, password=pw)   # the DDL (reconcile() does both)
    steps = await drop(pool, info, desired)
"""

from .conninfo import AdminConnInfo, parse_admin_secret, write_ca_file
from .manager import (
    AuxPassword,
    LoginCheck,
    Prepared,
    ReconcileResult,
    apply,
    check_login,
    database_size,
    drop,
    execute,
    in_database,
    observe,
    prepare,
    reconcile,
    server_version,
)
from .plan import (
    Action,
    DesiredDatabase,
    DesiredExtension,
    DesiredSchema,
    PasswordAction,
    ServerState,
    Step,
    plan,
    plan_drop,
)
from .pool import ServerPool, Session, StatementStats

__all__ = [
    "Action",
    "AdminConnInfo",
    "AuxPassword",
    "DesiredDatabase",
    "DesiredExtension",
    "DesiredSchema",
    "LoginCheck",
    "PasswordAction",
    "Prepared",
    "ReconcileResult",
    "ServerPool",
    "ServerState",
    "Session",
    "StatementStats",
    "Step",
    "apply",
    "check_login",
    "database_size",
    "drop",
    "execute",
    "in_database",
    "observe",
    "parse_admin_secret",
    "plan",
    "plan_drop",
    "prepare",
    "reconcile",
    "server_version",
    "write_ca_file",
]
