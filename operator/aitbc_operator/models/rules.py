"""Rules on strings that must mean exactly one thing to the apiserver and to the operator: image references and
host paths. Each rule exists once, as a regular expression or a constant, and is rendered into CEL for the CRD
(``x-kubernetes-validations``) and checked in Python by the models; the two agree by construction.

The regular expressions use only what RE2 (CEL's ``matches``) and Python's ``re`` both read the same way: no
``\\w`` (Unicode in Python), no lookaround, explicit character classes. ``re.fullmatch`` is used on the Python side, so
``$`` never matches before a trailing newline there either.
"""

from __future__ import annotations

import re

# --- image references (github.com/distribution/reference, the grammar the kubelet's runtime parses) -----------------
# Written out here rather than taken from a library: the apiserver needs the expression itself (CEL `matches`), and
# one expression serves both sides. reference := name [":" tag] ["@" digest].
_ALNUM = "[a-z0-9]+"
_SEPARATOR = "(?:__|[_.]|-+)"
_PATH_COMPONENT = f"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PORT = "(?::[0-9]+)?"
# As the runtime normalises a name (ParseNormalizedNamed): the first component is a registry only when it has a dot or
# a port, is `localhost` or an IPv6 address; otherwise it is part of the (lower-case) path on docker.io.
_DOMAIN = (f"(?:localhost{_PORT}|{_DOMAIN_COMPONENT}(?:[.]{_DOMAIN_COMPONENT})+{_PORT}|{_DOMAIN_COMPONENT}:[0-9]+"
           f"|\\[[a-fA-F0-9:]+\\]{_PORT})")
_NAME = f"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
#: A container image reference: ``[registry[:port]/]path[:tag][@digest]`` (lower-case path, no spaces or newlines).
IMAGE_REFERENCE = f"^{_NAME}(?::{_TAG})?(?:@{_DIGEST})?$"
IMAGE_REFERENCE_MESSAGE = (
    "must be a container image reference, [registry[:port]/]path[:tag][@digest] (lower-case path; no spaces,"
    " newlines or upper-case letters in it)"
)


def is_image_reference(value: str) -> bool:
    """Whether ``value`` is a container image reference (:data:`IMAGE_REFERENCE`)."""
    return re.fullmatch(IMAGE_REFERENCE, value) is not None


# --- absolute paths -------------------------------------------------------------------------------------------------
#: ``/a/b``: absolute, no empty segment (``//``), no trailing ``/``; with :data:`DOT_SEGMENT` absent, also normalised.
NORMALISED_PATH = "^(/[^/\\x00]+)+$"
#: A ``.`` or ``..`` segment.
DOT_SEGMENT = "/[.][.]?(/|$)"
NORMALISED_PATH_MESSAGE = "must be an absolute, normalised path: no '.' or '..' segments, no '//', no trailing '/'"

#: Host directories a chain volume may never be, lie under or contain (``/var`` contains ``/var/run``), whatever
#: prefixes the operator's settings allow; ``/`` itself is refused too.
FORBIDDEN_HOST_PATHS = ("/etc", "/proc", "/sys", "/dev", "/var/run", "/run", "/root", "/boot", "/usr")
FORBIDDEN_HOST_PATH_MESSAGE = (
    "must not be /, nor be, lie under or contain " + ", ".join(FORBIDDEN_HOST_PATHS)
)


def is_normalised_path(value: str) -> bool:
    """``/a/b`` without ``.``/``..``/empty segments or a trailing slash."""
    return re.fullmatch(NORMALISED_PATH, value) is not None and re.search(DOT_SEGMENT, value) is None


def is_forbidden_host_path(value: str) -> bool:
    """``/``, or one of :data:`FORBIDDEN_HOST_PATHS`, a path under one, or a directory containing one."""
    return value == "/" or any(
        value == f or value.startswith(f + "/") or f.startswith(value + "/") for f in FORBIDDEN_HOST_PATHS
    )


def is_under(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or inside it, segment-wise (``/var/lib/aitbc-x`` is not under ``/var/lib/aitbc``)."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


# --- CEL rendering --------------------------------------------------------------------------------------------------


def cel_string(value: str) -> str:
    """``value`` as a CEL string literal (single quotes; backslashes and quotes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cel_list(values: tuple[str, ...] | list[str]) -> str:
    """A CEL list of string literals."""
    return "[" + ", ".join(cel_string(v) for v in values) + "]"


def cel_is_normalised_path(expr: str) -> str:
    """CEL: ``expr`` (a string) is a normalised absolute path."""
    return f"{expr}.matches({cel_string(NORMALISED_PATH)}) && !{expr}.matches({cel_string(DOT_SEGMENT)})"


def cel_is_allowed_host_path(expr: str) -> str:
    """CEL: ``expr`` is not a forbidden host path (see :func:`is_forbidden_host_path`)."""
    return (f"{expr} != '/' && {cel_list(FORBIDDEN_HOST_PATHS)}.all(f, {expr} != f"
            f" && !{expr}.startsWith(f + '/') && !f.startsWith({expr} + '/'))")


def cel_is_under_any(expr: str, prefixes: str) -> str:
    """CEL: ``expr`` is under one of the list ``prefixes`` (see :func:`is_under`)."""
    return f"{prefixes}.exists(p, p == '/' || {expr} == p || {expr}.startsWith(p + '/'))"
