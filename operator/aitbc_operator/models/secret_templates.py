"""The grammar of connection-Secret templates (``spec.secret.templates``): one regular expression, read the same way by
the apiserver (CEL ``matches``, RE2) and by the operator (``re.fullmatch``), so a template the CRD accepts is exactly
one the operator can render.

A template is text with placeholders ``{{ .name }}`` or ``{{ .name | filter }}`` (Go template syntax, spaces
optional). Variables: a fixed set (:data:`VARIABLES`). Filters: ``urlescape`` percent-encodes everything but RFC 3986's
unreserved characters (right for the user-info, path and query parts of a URL: ``@:/?#%'"\\`` all become ``%XX``);
``pgpass`` escapes ``\\`` and ``:`` with a backslash, as a ``.pgpass`` line needs. Literal ``{`` and ``}`` are not
allowed outside placeholders (no URL or pgpass line needs them, and a stray ``{{`` would otherwise be a silent typo).
"""

from __future__ import annotations

import re

#: What a template may name: the connection's parts as the Secret holds them.
VARIABLES = ("user", "password", "host", "port", "database", "sslmode")
#: What a placeholder may apply to a variable.
FILTERS = ("urlescape", "pgpass")

_PLACEHOLDER = (r"\{\{ *\.(?:" + "|".join(VARIABLES) + r")(?: *\| *(?:" + "|".join(FILTERS) + r"))? *\}\}")
#: A whole template: text without braces, and placeholders.
TEMPLATE_PATTERN = r"^(?:[^{}]|" + _PLACEHOLDER + r")*$"
#: One placeholder, with the variable and the filter captured (for rendering).
PLACEHOLDER = re.compile(r"\{\{ *\.(" + "|".join(VARIABLES) + r")(?: *\| *(" + "|".join(FILTERS) + r"))? *\}\}")
TEMPLATE_MESSAGE = (
    "templates may only use {{ .VAR }} or {{ .VAR | FILTER }} with VAR one of " + ", ".join(VARIABLES)
    + " and FILTER one of " + ", ".join(FILTERS) + "; no other { or } characters"
)
#: Secret data keys (what the apiserver accepts in a Secret).
TEMPLATE_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
TEMPLATE_MAX_LENGTH = 1024
TEMPLATE_MAX_KEYS = 16


def check_template(key: str, template: str) -> None:
    """Raise ValueError naming the key when a template does not follow the grammar."""
    if not re.fullmatch(TEMPLATE_KEY_PATTERN, key) or len(key) > 253:
        raise ValueError(f"secret.templates key {key!r} is not a valid Secret key ([-._a-zA-Z0-9], at most 253)")
    if len(template) > TEMPLATE_MAX_LENGTH:
        raise ValueError(f"secret.templates[{key}] is longer than {TEMPLATE_MAX_LENGTH} characters")
    if not re.fullmatch(TEMPLATE_PATTERN, template):
        raise ValueError(f"secret.templates[{key}]: {TEMPLATE_MESSAGE}")
