"""Pure builders of the AitbcDatabase connection Secret: its data (SQLAlchemy and libpq URLs) and the object
around it."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .. import dburl
from ..models.database import AitbcDatabaseSpec, Service
from .common import child_metadata
from .secret_templates import render_all

#: The SQLAlchemy dialect+driver the AITBC services use (runbook: postgresql+psycopg://...).
SQLALCHEMY_DRIVER = "postgresql+psycopg"
#: libpq's default sslmode: left out of the URLs to keep them identical to the runbook's.
DEFAULT_SSLMODE = "prefer"
#: Where applications mount the connection Secret's ``ca.crt`` (a fixed, documented path the URLs name as
#: ``sslrootcert``): a Secret volume with ``items: [{key: ca.crt, path: ca.crt}]`` at ``CA_MOUNT_DIR``.
CA_MOUNT_DIR = "/etc/aitbc/postgres-ca"
CA_KEY = "ca.crt"
CA_MOUNT_PATH = f"{CA_MOUNT_DIR}/{CA_KEY}"
CA_VOLUME = "postgres-ca"


def ca_volume(secret_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volumeMount, volume) putting the connection Secret's ``ca.crt`` at ``CA_MOUNT_PATH``, read-only."""
    return ({"name": CA_VOLUME, "mountPath": CA_MOUNT_DIR, "readOnly": True},
            {"name": CA_VOLUME, "secret": {"secretName": secret_name, "items": [{"key": CA_KEY, "path": CA_KEY}]}})


def database_url(*, driver: str, username: str, password: str, host: str, port: int, database: str,
                 sslmode: str, sslrootcert: str | None = None) -> str:
    """A connection URL with user and password percent-encoded (as SQLAlchemy renders it, dburl.py)."""
    query = {} if sslmode == DEFAULT_SSLMODE else {"sslmode": sslmode}
    if sslrootcert is not None:
        query["sslrootcert"] = sslrootcert
    return dburl.render(driver, username=username, password=password, host=host, port=port, database=database,
                        query=query)


def connection_secret_data(spec: AitbcDatabaseSpec, *, server_host: str, server_port: int, password: str,
                           ca_pem: str | None = None, username: str | None = None) -> dict[str, str]:
    """The connection Secret's ``stringData`` for applications.

    ``server_host``/``server_port`` are the admin connection's; ``spec.server.clientHost``/``clientPort`` win when set
    (applications reach the server under another name). Keys: ``DATABASE_URL`` and the service's own variable
    (``MEMPOOL_DB_URL``, ...) with the ``postgresql+psycopg://`` URL, ``uri`` (plain libpq ``postgresql://`` URI),
    ``host``, ``port``, ``database``, ``username``, ``password``, ``sslmode``; the coordinator also gets
    ``DATABASE_ADAPTER=postgresql``. With ``ca_pem`` (the CA of ``server.caSecretRef``) also ``ca.crt`` and
    ``sslrootcert``, and the URLs name ``sslrootcert=CA_MOUNT_PATH``, where the application mounts ``ca.crt``.
    ``username``: the login role (default: the role; with AlternatingRoles the current login, for the read-only
    Secret the read-only role). ``spec.secret.templates`` are rendered with the same values.
    """
    user = username or spec.effective_role_name
    host = spec.server.client_host or server_host
    port = spec.server.client_port or server_port
    sslmode = spec.server.ssl_mode
    sslrootcert = CA_MOUNT_PATH if ca_pem is not None else None

    def url(driver: str) -> str:
        return database_url(driver=driver, username=user, password=password, host=host,
                            port=port, database=spec.effective_database_name, sslmode=sslmode,
                            sslrootcert=sslrootcert)

    data = {
        "DATABASE_URL": url(SQLALCHEMY_DRIVER),
        spec.url_env_var: url(SQLALCHEMY_DRIVER),
        "uri": url("postgresql"),
        "host": host,
        "port": str(port),
        "database": spec.effective_database_name,
        "username": user,
        "password": password,
        "sslmode": sslmode,
    }
    if spec.service is Service.COORDINATOR:
        data["DATABASE_ADAPTER"] = "postgresql"
    if ca_pem is not None:
        data[CA_KEY] = ca_pem
        data["sslrootcert"] = CA_MOUNT_PATH
    values = {"user": user, "password": password, "host": host, "port": str(port),
              "database": spec.effective_database_name, "sslmode": sslmode}
    data.update(render_all(spec.secret.templates, values))
    return data


def secret_hash(data: Mapping[str, str]) -> str:
    """A canonical hash of a Secret's data (sorted JSON): what consumers are stamped with. Never the data itself."""
    canonical = json.dumps(dict(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


COMPONENT_DATABASE = "database"


def connection_secret(owner: Mapping[str, Any], spec: AitbcDatabaseSpec, data: Mapping[str, str], *,
                      read_only: bool = False) -> dict[str, Any]:
    """The connection Secret around `data`: stable name, owner reference, extra labels/annotations from the spec.
    ``read_only``: the read-only role's Secret instead (its own name, the same labels and annotations).

    Values are base64-encoded into `data` (not `stringData`) so the live object can be compared field by field.
    Server-side apply owns only these keys: keys someone else added to the Secret are left alone.
    """
    resource = owner["metadata"]["name"]
    name = spec.read_only_secret_name(resource) if read_only else spec.secret_name(resource)
    meta = child_metadata(owner, name, COMPONENT_DATABASE, labels=spec.secret.labels,
                          annotations=spec.secret.annotations)
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": encoded}
