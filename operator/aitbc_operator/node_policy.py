"""What an AitbcNode author may ask of a Kubernetes node, as the operator's settings bound it: a pure decision.

Three settings, each an environment variable of the operator and a key of the params ConfigMap that the
ValidatingAdmissionPolicy reads (admission.py renders the policy from this module, so both enforce the same rules
with the same messages):

- ``AITBC_NODE_HOSTPATH_PREFIXES`` (comma-separated, default ``/var/lib/aitbc``): ``storage.hostPath.path`` must be
  one of them or lie under one (segment-wise). Empty: no hostPath storage at all. ``/``, ``/etc``, ``/proc`` ... are
  refused by the CRD whatever the prefixes say (models/rules.py).
- ``AITBC_NODE_ALLOW_PRIVILEGED`` (default ``true``, as the product design asks): whether ``volumePrep.privileged:
  true`` is accepted. The default init container is the least-privilege one either way.
- ``AITBC_NODE_VOLUME_PREP_IMAGES`` (comma-separated, default empty): the images ``volumePrep.image`` may name.
  Unset, the init container runs the operator's own image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .models.node import DEFAULT_DATA_DIR, AitbcNodeSpec
from .models.rules import (
    IMAGE_REFERENCE_MESSAGE,
    NORMALISED_PATH_MESSAGE,
    is_image_reference,
    is_normalised_path,
    is_under,
)

ENV_HOSTPATH_PREFIXES = "AITBC_NODE_HOSTPATH_PREFIXES"
ENV_ALLOW_PRIVILEGED = "AITBC_NODE_ALLOW_PRIVILEGED"
ENV_VOLUME_PREP_IMAGES = "AITBC_NODE_VOLUME_PREP_IMAGES"
#: Characters a hostPath prefix setting may not hold: list separators, quotes, backslashes and control characters
#: (the admission policy carries the setting inside CEL and YAML string literals).
_UNSAFE_IN_PREFIX = re.compile(r"[,\"'\\\x00-\x1f\x7f]")
#: Spellings of a boolean setting (case-insensitive); anything else is refused when the operator starts.
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")


def split_list(raw: str) -> tuple[str, ...]:
    """A comma-separated setting: items trimmed, empty items dropped (the admission policy splits the same way)."""
    return tuple(p for p in (s.strip() for s in raw.split(",")) if p)


def parse_bool(name: str, raw: str) -> bool:
    """A boolean setting; a ValueError naming it for anything but the accepted spellings."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use true or false)")


@dataclass(frozen=True)
class NodePolicy:
    """The node settings of the operator (see the module docstring)."""

    host_path_prefixes: tuple[str, ...] = (DEFAULT_DATA_DIR,)
    allow_privileged: bool = True
    volume_prep_images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for prefix in self.host_path_prefixes:
            if prefix != "/" and not is_normalised_path(prefix):
                raise ValueError(f"{ENV_HOSTPATH_PREFIXES}: {prefix!r} {NORMALISED_PATH_MESSAGE}")
            if _UNSAFE_IN_PREFIX.search(prefix):
                raise ValueError(f"{ENV_HOSTPATH_PREFIXES}: {prefix!r} must not contain quotes, backslashes, commas"
                                 " or control characters")
        for image in self.volume_prep_images:
            if not is_image_reference(image):
                raise ValueError(f"{ENV_VOLUME_PREP_IMAGES}: {image!r} {IMAGE_REFERENCE_MESSAGE}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NodePolicy:
        """The policy from the environment (a missing variable keeps its default; an empty list means none)."""
        default = cls()
        prefixes, privileged, images = (env.get(n) for n in (ENV_HOSTPATH_PREFIXES, ENV_ALLOW_PRIVILEGED,
                                                             ENV_VOLUME_PREP_IMAGES))
        return cls(
            host_path_prefixes=default.host_path_prefixes if prefixes is None else split_list(prefixes),
            allow_privileged=default.allow_privileged if privileged is None else parse_bool(ENV_ALLOW_PRIVILEGED,
                                                                                            privileged),
            volume_prep_images=default.volume_prep_images if images is None else split_list(images),
        )

    def as_env(self) -> dict[str, str]:
        """The environment (and params ConfigMap data) that gives this policy."""
        return {
            ENV_HOSTPATH_PREFIXES: ",".join(self.host_path_prefixes),
            ENV_ALLOW_PRIVILEGED: "true" if self.allow_privileged else "false",
            ENV_VOLUME_PREP_IMAGES: ",".join(self.volume_prep_images),
        }


@dataclass(frozen=True)
class Violation:
    """One refused field: where, and the rule it breaks (the admission policy's message, word for word)."""

    field: str
    message: str

    def __str__(self) -> str:
        return self.message


def host_path_message(path: str, prefixes: tuple[str, ...]) -> str:
    """Refusal of a hostPath outside the allowed prefixes."""
    allowed = ", ".join(prefixes) or "none: hostPath storage is disabled"
    return (f"storage.hostPath.path {path} is not under a prefix the operator allows"
            f" ({ENV_HOSTPATH_PREFIXES}: {allowed})")


PRIVILEGED_MESSAGE = (
    f"volumePrep.privileged: true is not allowed by the operator's settings ({ENV_ALLOW_PRIVILEGED}); leave it"
    " false: the least-privilege init container does the same work"
)


def image_message(image: str) -> str:
    """Refusal of an init-container image that is not on the allowlist."""
    return (f"volumePrep.image {image} is not an image the operator allows ({ENV_VOLUME_PREP_IMAGES}); leave it unset"
            " to run the operator's own image")


def violations(spec: AitbcNodeSpec, policy: NodePolicy) -> list[Violation]:
    """Every field of ``spec`` the policy refuses (empty: allowed)."""
    out = []
    host_path = spec.storage.host_path
    if host_path is not None and not any(is_under(host_path.path, p) for p in policy.host_path_prefixes):
        out.append(Violation("spec.storage.hostPath.path", host_path_message(host_path.path,
                                                                            policy.host_path_prefixes)))
    if spec.volume_prep.privileged and not policy.allow_privileged:
        out.append(Violation("spec.volumePrep.privileged", PRIVILEGED_MESSAGE))
    image = spec.volume_prep.image
    if image is not None and image not in policy.volume_prep_images:
        out.append(Violation("spec.volumePrep.image", image_message(image)))
    return out
