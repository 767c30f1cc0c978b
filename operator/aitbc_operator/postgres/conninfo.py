"""The admin connection to a PostgreSQL server: parsed from the admin Secret's data, never shown with its password."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from ..errors import InvalidSpec
from ..models.database import SslMode

DEFAULT_PORT = 5432
DEFAULT_DBNAME = "postgres"
#: Seconds libpq waits for a connection before the server counts as unreachable.
CONNECT_TIMEOUT = 5
#: An established connection to a server that went silent (network partition, blackholed port) is noticed within
#: about 30 s instead of the kernel's 15 minutes: TCP keepalives, and a limit on unacknowledged data (ms).
KEEPALIVE_OPTIONS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                     "tcp_user_timeout": 30_000}
#: Session settings of the operator's admin connections: never hang on a lock or a runaway statement.
ADMIN_OPTIONS = "-c lock_timeout=10s -c statement_timeout=120s -c idle_in_transaction_session_timeout=60s"
APPLICATION_NAME = "aitbc-operator"


@dataclass(frozen=True)
class AdminConnInfo:
    """How the operator reaches one PostgreSQL server as its admin role (CREATEROLE CREATEDB, not superuser).

    Hashable: equal infos share one pooled connection. The password is excluded from repr().
    """

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str = DEFAULT_DBNAME
    sslmode: SslMode = "require"
    sslrootcert: str | None = None

    @property
    def server_key(self) -> tuple[str, int, str, str]:
        """Identity of the server session (host, port, user, dbname); the pool keeps one connection per key."""
        return (self.host, self.port, self.user, self.dbname)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for psycopg's connect()."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            "sslmode": self.sslmode,
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": APPLICATION_NAME,
            **KEEPALIVE_OPTIONS,
        }
        if self.sslrootcert is not None:
            kwargs["sslrootcert"] = self.sslrootcert
        return kwargs

    def as_role(self, user: str, password: str, dbname: str) -> AdminConnInfo:
        """The same server and TLS settings, logging in as another role (used to check a role's password)."""
        return replace(self, user=user, password=password, dbname=dbname)

    def describe(self) -> str:
        """``user@host:port/dbname`` for messages (no password)."""
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


def parse_admin_secret(data: Mapping[str, str], *, sslmode: SslMode = "require",
                       ca_path: str | None = None) -> AdminConnInfo:
    """Build the admin connection from the admin Secret's (decoded) data.

    Either a ``uri`` key (``postgresql://user:password@host:port/dbname``, percent-encoded as usual) or the keys
    ``host``, ``port`` (optional, 5432), ``username``, ``password`` and ``dbname`` (optional, ``postgres``).
    ``sslmode`` and ``ca_path`` come from the resource's spec and win over anything in the URI.
    Raises InvalidSpec naming what is missing or malformed.
    """
    if "uri" in data:
        values = _parse_uri(data["uri"])
    else:
        missing = [key for key in ("host", "username", "password") if not data.get(key)]
        if missing:
            raise InvalidSpec(
                f"admin Secret lacks key(s) {', '.join(missing)}: it needs either 'uri' or 'host', 'username' and "
                "'password' (optionally 'port' and 'dbname')"
            )
        values = {k: data[k] for k in ("host", "port", "dbname", "password") if data.get(k)}
        values["user"] = data["username"]
    for key in ("host", "user", "password"):
        if not values.get(key):
            raise InvalidSpec(f"admin Secret's uri lacks the {key}")
    host = values["host"]
    if "," in host:
        raise InvalidSpec("admin Secret: exactly one host is supported")
    if (sslmode in ("verify-ca", "verify-full")) and ca_path is None:
        raise InvalidSpec(f"sslMode {sslmode} needs a CA certificate (server.caSecretRef)")
    return AdminConnInfo(
        host=host,
        port=_parse_port(values.get("port")),
        user=values["user"],
        password=values["password"],
        dbname=values.get("dbname") or DEFAULT_DBNAME,
        sslmode=sslmode,
        sslrootcert=ca_path,
    )


def _parse_uri(uri: str) -> dict[str, str]:
    if not uri.startswith(("postgresql://", "postgres://")):
        raise InvalidSpec("admin Secret's uri must start with postgresql://")
    try:
        parsed = psycopg.conninfo.conninfo_to_dict(uri)
    except psycopg.ProgrammingError:
        # The message may quote the URI, which holds a password: do not pass it on.
        raise InvalidSpec("admin Secret's uri is not a valid PostgreSQL URI") from None
    return {k: str(v) for k, v in parsed.items() if v is not None}


def _parse_port(value: str | None) -> int:
    if value is None:
        return DEFAULT_PORT
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise InvalidSpec(f"admin Secret's port {value!r} is not a port number")
    return int(value)


def write_ca_file(pem: str, directory: Path | None = None) -> str:
    """Store a CA certificate (PEM) for libpq's ``sslrootcert`` and return the file's path.

    The file name is the content's hash, so the same CA maps to the same path (and the same pooled connection);
    writing is atomic. Default directory: ``$TMPDIR/aitbc-operator-ca``.
    """
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidSpec("the CA Secret's key does not hold a PEM certificate")
    directory = directory or Path(tempfile.gettempdir()) / "aitbc-operator-ca"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{hashlib.sha256(pem.encode()).hexdigest()[:32]}.pem"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "w") as out:
            out.write(pem)
        Path(tmp).replace(path)
    return str(path)
