"""API key values, hashes and fingerprints. Only the hash of a key leaves its Secret."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "tp_"
# The Secret data field holding a key's value (both generated and adopted keys).
SECRET_KEY_FIELD = "api-key"  # noqa: S105 - a field name, not a secret


def generate_key() -> str:
    """A new key: 256 bits from the OS CSPRNG, URL-safe, recognisable by its prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(value: str) -> str:
    """SHA-256 hex of a key value: what the policy stores and the gate looks up.

    Generated keys carry 256 bits of entropy, so an unsalted fast hash cannot be reversed.
    """
    return hashlib.sha256(value.encode()).hexdigest()


def fingerprint(key_hash: str) -> str:
    """The short form of a key hash shown in status and logs."""
    return key_hash[:12]
