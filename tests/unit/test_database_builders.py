"""The connection Secret's data (pure builder) and the password generator."""

from __future__ import annotations

import string

import psycopg
import pytest
from sqlalchemy.engine import make_url

from aitbc_operator.builders.database import CA_MOUNT_PATH, connection_secret_data
from aitbc_operator.models.database import SERVICE_URL_ENV, AitbcDatabaseSpec, Service
from aitbc_operator.passwords import ALPHABET, generate_password
from tests.factories import database_spec

HOSTILE = ["@:/?#%'\"\\", "p@ss:w/o?r#d%25", "%40%3A", "a b+c&d=e", "é∂漢", "[::1]", "user@host:5432/db?x=y#frag"]


def spec(**overrides: object) -> AitbcDatabaseSpec:
    return AitbcDatabaseSpec.model_validate(database_spec(**overrides))


def test_mempool_secret_data() -> None:
    data = connection_secret_data(spec(service="mempool"), server_host="10.0.0.5", server_port=5432,
                                  password="plainpassword")
    url = "postgresql+psycopg://aitbc_mempool:plainpassword@10.0.0.5:5432/aitbc_mempool?sslmode=disable"
    assert data == {
        "DATABASE_URL": url,
        "MEMPOOL_DB_URL": url,
        "uri": url.replace("postgresql+psycopg://", "postgresql://"),
        "host": "10.0.0.5",
        "port": "5432",
        "database": "aitbc_mempool",
        "username": "aitbc_mempool",
        "password": "plainpassword",
        "sslmode": "disable",
    }


@pytest.mark.parametrize("service", list(Service))
def test_each_service_gets_its_own_variable(service: Service) -> None:
    data = connection_secret_data(spec(service=service.value), server_host="h", server_port=1, password="p" * 16)
    assert data[SERVICE_URL_ENV[service]] == data["DATABASE_URL"]
    assert ("DATABASE_ADAPTER" in data) == (service is Service.COORDINATOR)
    if service is Service.COORDINATOR:
        assert data["DATABASE_ADAPTER"] == "postgresql"


def test_client_host_and_port_win_and_default_sslmode_is_left_out() -> None:
    server = {"adminSecretRef": {"name": "a"}, "sslMode": "prefer", "clientHost": "postgres.db.svc", "clientPort": 6432}
    data = connection_secret_data(spec(server=server, databaseName="ex_db", roleName="ex_role"),
                                  server_host="admin.example", server_port=5432, password="pw" * 8)
    assert data["DATABASE_URL"] == f"postgresql+psycopg://ex_role:{'pw' * 8}@postgres.db.svc:6432/ex_db"
    assert (data["host"], data["port"], data["sslmode"]) == ("postgres.db.svc", "6432", "prefer")


def test_with_a_ca_the_secret_carries_it_and_the_urls_name_its_mount_path() -> None:
    server = {"adminSecretRef": {"name": "a"}, "sslMode": "verify-full", "caSecretRef": {"name": "ca", "key": "ca.crt"}}
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    data = connection_secret_data(spec(server=server), server_host="db.example", server_port=5432, password="p" * 16,
                                  ca_pem=pem)
    assert (data["ca.crt"], data["sslrootcert"]) == (pem, CA_MOUNT_PATH)
    assert CA_MOUNT_PATH == "/etc/aitbc/postgres-ca/ca.crt"
    for key in ("DATABASE_URL", "MEMPOOL_DB_URL", "uri"):
        assert make_url(data[key]).query == {"sslmode": "verify-full", "sslrootcert": CA_MOUNT_PATH}
    params = psycopg.conninfo.conninfo_to_dict(data["uri"])
    assert (params["sslmode"], params["sslrootcert"]) == ("verify-full", CA_MOUNT_PATH)
    without = connection_secret_data(spec(server={**server, "sslMode": "require", "caSecretRef": None}),
                                     server_host="db.example", server_port=5432, password="p" * 16)
    assert "ca.crt" not in without
    assert "sslrootcert" not in without["DATABASE_URL"]


@pytest.mark.parametrize("password", HOSTILE)
def test_hostile_passwords_round_trip_through_sqlalchemy_and_libpq(password: str) -> None:
    data = connection_secret_data(spec(), server_host="db", server_port=5432, password=password)
    url = make_url(data["DATABASE_URL"])
    assert url.password == password
    assert (url.username, url.host, url.port, url.database) == ("aitbc_mempool", "db", 5432, "aitbc_mempool")
    assert url.drivername == "postgresql+psycopg"
    assert data["password"] == password
    if " " not in password:  # libpq's URI parser takes the URI as is; SQLAlchemy leaves spaces unencoded
        parsed = psycopg.conninfo.conninfo_to_dict(data["uri"])
        assert parsed["password"] == password
        assert parsed["host"] == "db"


def test_generated_passwords_round_trip_through_libpq_uri() -> None:
    for _ in range(50):
        password = generate_password(40)
        data = connection_secret_data(spec(), server_host="db", server_port=5432, password=password)
        assert psycopg.conninfo.conninfo_to_dict(data["uri"])["password"] == password
        assert make_url(data["DATABASE_URL"]).password == password


def test_ipv6_host_is_bracketed() -> None:
    data = connection_secret_data(spec(), server_host="fd00::5", server_port=5432, password="p" * 16)
    assert "@[fd00::5]:5432/" in data["DATABASE_URL"]
    assert make_url(data["DATABASE_URL"]).host == "fd00::5"


@pytest.mark.parametrize("length", [16, 32, 128])
def test_generated_password_length_and_alphabet(length: int) -> None:
    password = generate_password(length)
    assert len(password) == length
    assert set(password) <= set(ALPHABET)


def test_alphabet_is_url_hostile_but_env_file_safe() -> None:
    assert set("@:/?#%") <= set(ALPHABET)
    assert not set("'\"`\\$ \t\n") & set(ALPHABET)
    assert set(string.ascii_letters + string.digits) <= set(ALPHABET)


def test_generated_passwords_differ_and_use_the_whole_alphabet() -> None:
    passwords = {generate_password() for _ in range(200)}
    assert len(passwords) == 200
    assert set("".join(passwords)) == set(ALPHABET)  # 6400 draws from 80 symbols: all appear


@pytest.mark.parametrize("length", [0, 15, 129])
def test_password_length_bounds(length: int) -> None:
    with pytest.raises(ValueError, match="between 16 and 128"):
        generate_password(length)
