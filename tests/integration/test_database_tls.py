"""TLS end to end: a PostgreSQL 15 server that accepts TCP only over TLS (hostssl), with a CA and a server
certificate for 127.0.0.1 and localhost made here with openssl; the real operator in sslMode verify-full; then what an
application does with the connection Secret: mount `ca.crt` where the URLs say (`sslrootcert`) and connect."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from kubernetes import client

from aitbc_operator.builders.database import CA_MOUNT_PATH
from tests.integration.test_database_operator import DbEnv, database, make_env, table_can_be_created
from tests.operator_fixtures import OperatorProcess
from tests.pg.fixtures import ADMIN
from tests.pg.server import LoginInfo, PostgresServer, find_debian_bin_dir

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate it signed (SAN IP:127.0.0.1, DNS:localhost), and an unrelated CA."""

    ca_pem: str
    server_cert: Path
    server_key: Path
    other_ca_pem: str


def make_pki(directory: Path) -> Pki:
    """Certificates made with openssl, as an administrator would."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory, timeout=60)

    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=aitbc {ca}",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=postgres", "-keyout", "server.key",
            "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "server.crt")
    return Pki((directory / "ca.crt").read_text(), directory / "server.crt", directory / "server.key",
               (directory / "other-ca.crt").read_text())


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, LoginInfo, Pki]]:
    bin_dir = find_debian_bin_dir("15")
    if bin_dir is None or shutil.which("openssl") is None:
        pytest.skip("needs Debian's PostgreSQL 15 (built with OpenSSL) and openssl")
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    server = PostgresServer(bin_dir, name="pg-tls", certificate=(pki.server_cert, pki.server_key))
    try:
        server.start()
        yield server, server.create_admin(ADMIN, "tls-admin-password-1"), pki
    finally:
        server.cleanup(keep_logs_in=tmp_path_factory.getbasetemp() / "postgres-logs")


@pytest.fixture
def tls_env(kube: client.ApiClient, namespace: str, operator: OperatorProcess, names: str,
            tls_server: tuple[PostgresServer, LoginInfo, Pki]) -> Iterator[DbEnv]:
    server, admin, pki = tls_server
    client.CoreV1Api(kube).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="postgres-ca"), string_data={"ca.crt": pki.ca_pem}))
    yield from make_env(kube, namespace, server, admin, operator, names)


def with_root_cert(url: str, path: Path) -> str:
    """The Secret's URL with ``sslrootcert`` pointing at where this test put ca.crt (instead of the pod's mount)."""
    parsed = sqlalchemy.engine.make_url(url)
    return parsed.update_query_dict({"sslrootcert": str(path)}).render_as_string(hide_password=False)


def test_verify_full_end_to_end(tls_env: DbEnv, names: str, tls_server: tuple[PostgresServer, LoginInfo, Pki],
                                tmp_path: Path) -> None:
    env, pki = tls_env, tls_server[2]
    env.create(database("tls", names, server={"sslMode": "verify-full",
                                              "caSecretRef": {"name": "postgres-ca", "key": "ca.crt"}}))
    env.wait_ready("tls")  # the operator itself connected with verify-full (the server takes TLS only)

    data = env.secret("tls-db")
    assert data["ca.crt"] == pki.ca_pem
    assert data["sslmode"] == "verify-full"
    assert data["sslrootcert"] == CA_MOUNT_PATH == "/etc/aitbc/postgres-ca/ca.crt"
    for key in ("DATABASE_URL", "MEMPOOL_DB_URL", "uri"):
        query = sqlalchemy.engine.make_url(data[key]).query
        assert (query["sslmode"], query["sslrootcert"]) == ("verify-full", CA_MOUNT_PATH), key

    # The application: ca.crt mounted (here: written) where sslrootcert says, then connect as the Secret says.
    mounted = tmp_path / "ca.crt"
    mounted.write_text(data["ca.crt"])
    assert table_can_be_created(with_root_cert(data["DATABASE_URL"], mounted))
    with psycopg.connect(with_root_cert(data["uri"], mounted)) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)

    # A CA that did not sign the server's certificate: refused.
    wrong = tmp_path / "other-ca.crt"
    wrong.write_text(pki.other_ca_pem)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(with_root_cert(data["uri"], wrong)).close()
