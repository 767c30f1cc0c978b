"""Render ``spec.secret.templates`` (grammar: models/secret_templates.py) with the connection's values.

Own code rather than a template engine (Jinja2, a Go-template port): the grammar is a fixed set of variables and two
filters, checked by the CRD itself, and an engine would accept (and run) far more than the CRD allows.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from ..models.secret_templates import PLACEHOLDER


def urlescape(value: str) -> str:
    """Percent-encode everything but RFC 3986's unreserved characters (``A-Za-z0-9-._~``): safe in a URL's
    user-info, path and query alike."""
    return urllib.parse.quote(value, safe="")


def pgpass_escape(value: str) -> str:
    """A ``.pgpass`` field: backslash and colon escaped with a backslash (libpq's rule)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


_FILTERS = {None: lambda v: v, "urlescape": urlescape, "pgpass": pgpass_escape}


def render(template: str, values: Mapping[str, str]) -> str:
    """The template with every placeholder replaced (the template was checked against the grammar before)."""
    return PLACEHOLDER.sub(lambda m: _FILTERS[m.group(2)](values[m.group(1)]), template)


def render_all(templates: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """Every template rendered, by key."""
    return {key: render(template, values) for key, template in templates.items()}
