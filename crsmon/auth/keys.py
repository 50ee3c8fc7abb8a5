"""API key format and hashing (no database here).

A key reads ``crsmon_<key_id>_<secret>``: ``key_id`` (12 hex digits) is public
and finds the row; ``secret`` (43 URL-safe characters, 256 random bits) is
shown once and never stored. The row holds HMAC-SHA256(pepper, secret): with a
random 256-bit secret a slow hash adds nothing, and the pepper (a server
secret, ``CRSMON_KEY_PEPPER``) keeps a stolen table useless. Secrets are
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "crsmon_"
_KEY = re.compile(r"^crsmon_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
EMBEDDED_PEPPER = "crsmon-embedded-pepper-not-for-production"
"""The pepper of the embedded default (production mode refuses to run on it)."""


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: the full text (shown once) and its parts."""

    text: str
    key_id: str
    secret: str


def generate() -> NewKey:
    """A new random key."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(f"{PREFIX}{key_id}_{secret}", key_id, secret)


def parse(text: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    match = _KEY.match(text)
    return None if match is None else (match[1], match[2])


def secret_hash(secret: str, pepper: str) -> str:
    """What the database keeps of a secret."""
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def matches(secret: str, stored_hash: str, pepper: str) -> bool:
    """Whether ``secret`` is the one whose hash is stored (constant time)."""
    return hmac.compare_digest(secret_hash(secret, pepper), stored_hash)
