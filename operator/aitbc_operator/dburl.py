"""Database URLs rendered exactly as SQLAlchemy's ``URL.create(...).render_as_string(hide_password=False)`` does.

Own code (stdlib quoting, the same safe characters as SQLAlchemy 2's ``URL.render_as_string``) rather than SQLAlchemy
itself: importing ``sqlalchemy`` costs the operator process 11 MiB resident for these few lines. SQLAlchemy stays the
reference: tests/unit/test_dburl.py renders hostile values both ways and requires the same text (a change would
rewrite every connection Secret and roll every consumer).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, quote_plus


def render(driver: str, *, username: str | None = None, password: str | None = None, host: str | None = None,
           port: int | None = None, database: str | None = None, query: Mapping[str, str] | None = None) -> str:
    """``driver://user:password@host:port/database?k=v`` with the parts percent-encoded (query keys sorted)."""
    out = f"{driver}://"
    if username is not None:
        out += quote(username, safe=" +")
        if password is not None:
            out += ":" + quote(password, safe=" +")
        out += "@"
    if host is not None:
        out += f"[{host}]" if ":" in host else host
    if port is not None:
        out += f":{port}"
    if database is not None:
        out += "/" + quote(database, safe=" +/")
    if query:
        out += "?" + "&".join(f"{quote_plus(k)}={quote_plus(query[k])}" for k in sorted(query))
    return out
