"""Password generation for the managed roles (``secrets``: a cryptographic generator).

The alphabet holds letters, digits and URL-hostile punctuation (``@ : / ? # % & = + ! * , ; ~ - _ . ^``) on purpose:
every consumer must percent-encode the password in URLs, and the tests prove that the Secret's URLs do.
Left out, so that the value survives env files, ``export VAR="..."``, YAML and systemd ``Environment="..."`` lines
unquoted by hand: whitespace, quotes (``' " ` ``), backslash and ``$`` (shell/systemd expansion).
80 symbols: 32 characters carry about 202 bits.
"""

from __future__ import annotations

import secrets
import string

PUNCTUATION = "@:/?#%&=+!*,;~-_.^"
ALPHABET = string.ascii_letters + string.digits + PUNCTUATION
MIN_LENGTH = 16
MAX_LENGTH = 128


def generate_password(length: int = 32) -> str:
    """A new random password of ``length`` characters (16..128) from ALPHABET."""
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(f"password length must be between {MIN_LENGTH} and {MAX_LENGTH}, not {length}")
    return "".join(secrets.choice(ALPHABET) for _ in range(length))
