"""Parsing the admin Secret, hiding its password, and turning psycopg errors into the operator's errors."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from aitbc_operator.errors import (
    AuthenticationFailed,
    InsufficientPrivilege,
    InvalidSpec,
    NameConflict,
    ServerUnreachable,
)
from aitbc_operator.postgres.conninfo import AdminConnInfo, parse_admin_secret, write_ca_file
from aitbc_operator.postgres.translate import password_rejected, translate, translate_connect_error


def test_keys_form_with_defaults() -> None:
    info = parse_admin_secret({"host": "db.example", "username": "admin", "password": "s3cret"}, sslmode="require")
    assert info == AdminConnInfo("db.example", 5432, "admin", "s3cret", "postgres", "require", None)
    assert info.connect_kwargs()["sslmode"] == "require"


def test_uri_form_is_percent_decoded_and_spec_sslmode_wins() -> None:
    info = parse_admin_secret({"uri": "postgresql://ad%40min:p%3A%2F%40ss@pg.svc:6543/admin_db?sslmode=disable"},
                              sslmode="verify-full", ca_path="/tmp/ca.pem")
    assert (info.host, info.port, info.user, info.password, info.dbname) == (
        "pg.svc", 6543, "ad@min", "p:/@ss", "admin_db")
    assert info.sslmode == "verify-full"
    assert info.connect_kwargs()["sslrootcert"] == "/tmp/ca.pem"


def test_repr_and_describe_hide_the_password() -> None:
    info = AdminConnInfo("h", 1, "u", "very-secret-password")
    assert "very-secret-password" not in repr(info)
    assert "very-secret-password" not in info.describe()
    assert info.as_role("app", "other", "db").server_key == ("h", 1, "app", "db")


@pytest.mark.parametrize(("data", "message"), [
    ({"username": "a", "password": "b"}, "host"),
    ({"host": "h", "password": "b"}, "username"),
    ({"host": "h", "username": "a"}, "password"),
    ({}, "host, username, password"),
    ({"uri": "postgresql://h/db"}, "user"),
    ({"uri": "postgresql://u@h/db"}, "password"),
    ({"uri": "mysql://u:p@h/db"}, "postgresql://"),
    ({"host": "h", "username": "a", "password": "b", "port": "54x"}, "not a port"),
    ({"host": "h", "username": "a", "password": "b", "port": "70000"}, "not a port"),
    ({"host": "h1,h2", "username": "a", "password": "b"}, "one host"),
])
def test_bad_secrets_are_invalid_spec_naming_the_problem(data: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_admin_secret(data)


def test_verify_modes_need_a_ca() -> None:
    with pytest.raises(InvalidSpec, match="CA"):
        parse_admin_secret({"host": "h", "username": "a", "password": "b"}, sslmode="verify-full")


def test_malformed_uri_error_does_not_echo_the_password() -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_admin_secret({"uri": "postgresql://u:topsecret@h:5432/db?bogus_option=1"})
    assert "topsecret" not in str(caught.value)


def test_ca_file_is_content_addressed(tmp_path: Path) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    first = write_ca_file(pem, tmp_path)
    assert write_ca_file(pem, tmp_path) == first
    assert Path(first).read_text() == pem
    assert write_ca_file(pem.replace("MIIB", "MIIC"), tmp_path) != first
    with pytest.raises(InvalidSpec):
        write_ca_file("not a certificate", tmp_path)


def _connect_error(text: str) -> psycopg.OperationalError:
    return psycopg.OperationalError(text)


@pytest.mark.parametrize(("text", "expected"), [
    ('connection failed: connection to server at "h", port 5432 failed: FATAL:  password authentication failed '
     'for user "admin"', AuthenticationFailed),
    ('connection failed: connection to server at "h", port 5432 failed: FATAL:  no pg_hba.conf entry for host',
     AuthenticationFailed),
    ('connection failed: connection to server at "h", port 5432 failed: FATAL:  database "x" does not exist',
     InvalidSpec),
    ('connection failed: connection to server at "h", port 5432 failed: Connection refused', ServerUnreachable),
    ('connection failed: connection to server at "h", port 5432 failed: FATAL:  the database system is shutting down',
     ServerUnreachable),
    ("connection failed: timeout expired", ServerUnreachable),
])
def test_connect_errors(text: str, expected: type[Exception]) -> None:
    error = translate_connect_error(_connect_error(text), "admin@h:5432/postgres")
    assert type(error) is expected
    assert "admin@h:5432/postgres" in str(error)


def test_password_rejected_only_for_password_failures() -> None:
    assert password_rejected(_connect_error('failed: FATAL:  password authentication failed for user "r"'))
    assert not password_rejected(_connect_error('failed: FATAL:  too many connections for role "r"'))
    assert not password_rejected(_connect_error("failed: Connection refused"))


@pytest.mark.parametrize(("error", "expected", "reason"), [
    (psycopg.errors.InsufficientPrivilege("permission denied to create database"), InsufficientPrivilege,
     "InsufficientPrivilege"),
    (psycopg.errors.DuplicateDatabase("database exists"), NameConflict, "NameConflict"),
    (psycopg.errors.DuplicateObject("role exists"), NameConflict, "NameConflict"),
    (psycopg.errors.DependentObjectsStillExist("owns objects"), NameConflict, "NameConflict"),
    (psycopg.errors.AdminShutdown("terminating connection"), ServerUnreachable, "ServerUnreachable"),
    (psycopg.OperationalError("server closed the connection unexpectedly"), ServerUnreachable, "ServerUnreachable"),
    (psycopg.errors.ObjectInUse("database is being accessed"), Exception, "ServerBusy"),
    (psycopg.errors.SyntaxError("syntax error"), Exception, "DatabaseError"),
])
def test_statement_errors(error: psycopg.Error, expected: type[Exception], reason: str) -> None:
    translated = translate(error, "create database x")
    assert isinstance(translated, expected)
    assert translated.reason == reason
    assert str(translated).startswith("create database x: ")
