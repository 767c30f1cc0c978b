"""Model validation: defaults as documented, and every bad value rejected with a message naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aitbc_operator.models import AitbcDatabaseSpec, AitbcNodeSpec, DeletionPolicy, parse_duration
from tests.factories import DELETE, database_spec, node_spec


def db(**overrides: object) -> AitbcDatabaseSpec:
    return AitbcDatabaseSpec.model_validate(database_spec(**overrides))


def node(**overrides: object) -> AitbcNodeSpec:
    return AitbcNodeSpec.model_validate(node_spec(**overrides))


def error_text(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return "\n".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.value.errors())


# --- AitbcDatabase ---


def test_database_defaults() -> None:
    spec = db()
    assert spec.effective_database_name == "aitbc_mempool"
    assert spec.effective_role_name == "aitbc_mempool"
    assert spec.url_env_var == "MEMPOOL_DB_URL"
    assert spec.connection_limit == -1
    assert spec.password.length == 32
    assert spec.password.rotation_period is None
    assert spec.deletion_policy is DeletionPolicy.RETAIN
    assert spec.server.ssl_mode == "disable"  # set by the factory; the model default is "require"
    assert spec.secret_name("mempool") == "mempool-db"


@pytest.mark.parametrize(
    ("service", "env"),
    [("coordinator", "DATABASE_URL"), ("exchange", "EXCHANGE_DATABASE_URL"), ("mempool", "MEMPOOL_DB_URL")],
)
def test_service_env_var(service: str, env: str) -> None:
    assert db(service=service).url_env_var == env


def test_explicit_names_override_defaults() -> None:
    spec = db(databaseName="chain_mempool", roleName="mempool_rw", secret={"name": "mp"})
    assert (spec.effective_database_name, spec.effective_role_name, spec.secret_name("x")) == (
        "chain_mempool",
        "mempool_rw",
        "mp",
    )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("databaseName", "x'; DROP TABLE users; --", "databaseName"),
        ("databaseName", 'aitbc"evil', "databaseName"),
        ("databaseName", "has space", "databaseName"),
        ("databaseName", "ünïcode", "databaseName"),
        ("databaseName", "a" * 64, "databaseName"),
        ("databaseName", "postgres", "reserved"),
        ("databaseName", "template0", "reserved"),
        ("databaseName", "template1", "reserved"),
        ("databaseName", "pg_anything", "reserved"),
        ("roleName", "x;y", "roleName"),
        ("roleName", "public", "reserved"),
        ("roleName", "pg_monitor", "reserved"),
        ("roleName", "Upper", "roleName"),
    ],
)
def test_bad_identifiers_rejected(field: str, value: str, expected: str) -> None:
    with pytest.raises(ValidationError) as exc:
        db(**{field: value})
    text = error_text(exc)
    assert field in text
    assert expected in text


def test_63_byte_identifier_accepted() -> None:
    assert db(databaseName="a" * 63).effective_database_name == "a" * 63


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"unknownField": 1}, "unknownField"),
        ({"server": {"bogus": True}}, "bogus"),
        ({"service": "mining"}, "service"),
        ({"connectionLimit": -2}, "connectionLimit"),
        ({"password": {"length": 8}}, "length"),
        ({"password": {"rotationPeriod": "30 days"}}, "rotationPeriod"),
        ({"server": {"sslMode": "verify-full"}}, "caSecretRef"),
        ({"deletionPolicy": "Delete"}, "deletionPolicy"),
        ({"server": {"adminSecretRef": DELETE}}, "adminSecretRef"),
    ],
)
def test_bad_database_values_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        db(**overrides)
    assert field in error_text(exc)


# --- AitbcNode ---


def test_node_defaults() -> None:
    spec = node(chainId=DELETE)
    assert spec.data_dir == "/var/lib/aitbc"
    assert spec.default_chain == "ait-mainnet"
    assert spec.storage.disable_cow is True
    assert spec.storage.require_no_cow is False
    assert spec.volume_prep.privileged is False  # least privilege unless asked (and allowed)
    assert spec.volume_prep.integrity_check == "quick"
    assert spec.rpc.port == 8006
    assert spec.rollout_timeout == "10m"
    assert spec.mempool.database_ref is None
    assert spec.storage.pvc is not None
    assert spec.storage.pvc.retain_on_delete is True


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"chainId": "ait-devnet"}, "chainId", "must be one of chains"),
        ({"chains": ["ait-mainnet", "ait-mainnet"]}, "chains", "unique"),
        ({"chains": []}, "chains", "at least 1"),
        ({"chains": ["Bad_Chain"]}, "chains", "DNS label"),
        (
            {"storage": {"pvc": {"size": "1Gi"}, "hostPath": {"path": "/var/lib/aitbc", "nodeName": "n1"}}},
            "storage",
            "exactly one",
        ),
        ({"storage": {"pvc": DELETE}}, "storage", "exactly one"),
        ({"dataDir": "relative/dir"}, "dataDir", "pattern"),
        ({"dataDir": "/var/lib/aitbc/"}, "dataDir", "normalised path"),
        ({"node": {"image": "ghcr.io/aitbc/node:1\n"}}, "image", "container image reference"),
        ({"rpc": {"image": "ghcr.io/aitbc/rpc:1 x"}}, "image", "container image reference"),
        ({"volumePrep": {"image": "Upper/Case"}}, "volumePrep.image", "container image reference"),
        ({"storage": {"pvc": DELETE, "hostPath": {"path": "/var/lib/aitbc/../../etc", "nodeName": "n1"}}},
         "hostPath.path", "normalised path"),
        ({"storage": {"pvc": DELETE, "hostPath": {"path": "/etc/aitbc", "nodeName": "n1"}}}, "hostPath.path",
         "must not be /"),
        ({"storage": {"pvc": DELETE, "hostPath": {"path": "/var", "nodeName": "n1"}}}, "hostPath.path", "contain"),
        ({"rolloutTimeout": "ten minutes"}, "rolloutTimeout", "pattern"),
        ({"node": {"env": [{"name": "DATABASE_URL", "value": "postgresql://u:p@h/db"}]}}, "env", "SQLite"),
        ({"node": {"bogus": 1}}, "bogus", "Extra inputs"),
        ({"volumePrep": {"integrityCheck": "deep"}}, "integrityCheck", ""),
        ({"backup": {"schedule": "0 25 * * *"}}, "backup.schedule", "Bad hour"),
        ({"backup": {"schedule": "nightly"}}, "backup.schedule", ""),
        ({"backup": {"timeZone": "Mars/Olympus"}}, "backup.timeZone", "not an IANA time zone"),
        ({"backup": {"keep": {"count": 0}}}, "keep.count", "greater than or equal to 1"),
        ({"maintenance": {"schedule": "0 3 * * 8"}}, "maintenance.schedule", "Bad day-of-week"),
        ({"restore": {"chain": "ait-devnet", "token": "t"}}, "restore.chain", "must be one of chains"),
        ({"restore": {"chain": "ait-mainnet", "token": "t", "backup": "newest"}}, "restore.backup", "pattern"),
        ({"health": {"port": 8080}}, "health.port", "the node's port"),
        ({"health": {"walLimit": "lots"}}, "walLimit", ""),
    ],
)
def test_bad_node_values_name_the_field(overrides: dict[str, object], field: str, expected: str) -> None:
    with pytest.raises(ValidationError) as exc:
        node(**overrides)
    text = error_text(exc)
    assert field in text
    assert expected in text


def test_sqlite_chain_url_allowed() -> None:
    spec = node(node={"env": [{"name": "DATABASE_URL", "value": "sqlite:////var/lib/aitbc/data/chain.db"}]})
    assert spec.node.env[0].value is not None


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("1h30m", 5400), ("720h", 2592000)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("1 day")
