"""dburl.render gives SQLAlchemy's rendering, character for character (the connection Secrets must not change)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import URL

from aitbc_operator import dburl
from aitbc_operator.passwords import PUNCTUATION

HOSTILE = PUNCTUATION + " '\"\\$`[]{}()<>|\t\nnaïve€"


@pytest.mark.parametrize(("username", "password", "host", "port", "database", "query"), [
    ("app", "secret", "db.example", 5432, "mempool", {}),
    (HOSTILE, HOSTILE, "10.0.0.1", 6543, HOSTILE + "/x", {"sslmode": "verify-full", "sslrootcert": "/etc/a b/ca.crt"}),
    ("u+v w", "p+q r%", "::1", None, None, {"k&=": "v&=+ "}),
    (None, None, None, None, "/var/lib/aitbc/data/ait-mainnet/chain.db", {}),
    ("only-user", None, "h", None, "d", {}),
])
@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql", "sqlite"])
def test_same_text_as_sqlalchemy(driver: str, username: str | None, password: str | None, host: str | None,
                                 port: int | None, database: str | None, query: dict[str, str]) -> None:
    reference = URL.create(driver, username=username, password=password, host=host, port=port, database=database,
                           query=query).render_as_string(hide_password=False)
    assert dburl.render(driver, username=username, password=password, host=host, port=port, database=database,
                        query=query) == reference
