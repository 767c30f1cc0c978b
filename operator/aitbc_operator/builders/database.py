"""Pure builder of the AitbcDatabase connection Secret's data (the Secret object around it is built elsewhere)."""

from __future__ import annotations

from sqlalchemy.engine import URL

from ..models.database import AitbcDatabaseSpec, Service

#: The SQLAlchemy dialect+driver the AITBC services use (runbook: postgresql+psycopg://...).
SQLALCHEMY_DRIVER = "postgresql+psycopg"
#: libpq's default sslmode: left out of the URLs to keep them identical to the runbook's.
DEFAULT_SSLMODE = "prefer"


def database_url(*, driver: str, username: str, password: str, host: str, port: int, database: str,
                 sslmode: str) -> str:
    """A connection URL with user and password percent-encoded (SQLAlchemy's URL, not string formatting)."""
    query = {} if sslmode == DEFAULT_SSLMODE else {"sslmode": sslmode}
    url = URL.create(driver, username=username, password=password, host=host, port=port, database=database,
                     query=query)
    return url.render_as_string(hide_password=False)


def connection_secret_data(spec: AitbcDatabaseSpec, *, server_host: str, server_port: int,
                           password: str) -> dict[str, str]:
    """The connection Secret's ``stringData`` for applications.

    ``server_host``/``server_port`` are the admin connection's; ``spec.server.clientHost``/``clientPort`` win when set
    (applications reach the server under another name). Keys: ``DATABASE_URL`` and the service's own variable
    (``MEMPOOL_DB_URL``, ...) with the ``postgresql+psycopg://`` URL, ``uri`` (plain libpq ``postgresql://`` URI),
    ``host``, ``port``, ``database``, ``username``, ``password``, ``sslmode``; the coordinator also gets
    ``DATABASE_ADAPTER=postgresql``.
    """
    host = spec.server.client_host or server_host
    port = spec.server.client_port or server_port
    sslmode = spec.server.ssl_mode

    def url(driver: str) -> str:
        return database_url(driver=driver, username=spec.effective_role_name, password=password, host=host,
                            port=port, database=spec.effective_database_name, sslmode=sslmode)

    data = {
        "DATABASE_URL": url(SQLALCHEMY_DRIVER),
        spec.url_env_var: url(SQLALCHEMY_DRIVER),
        "uri": url("postgresql"),
        "host": host,
        "port": str(port),
        "database": spec.effective_database_name,
        "username": spec.effective_role_name,
        "password": password,
        "sslmode": sslmode,
    }
    if spec.service is Service.COORDINATOR:
        data["DATABASE_ADAPTER"] = "postgresql"
    return data
