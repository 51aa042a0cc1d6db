"""Node tokens: the credential each node run gets at registration, kept only as a hash.

A token is 256 random bits, so a plain SHA-256 of it cannot be guessed back
and needs no salt or slow hash; comparisons run in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["hash_token", "new_token", "token_matches"]


def new_token() -> str:
    """A fresh node token, URL-safe text of 256 random bits."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the store keeps of ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    """Whether ``token`` is the one ``stored_hash`` was made from; never for an empty hash."""
    return bool(stored_hash) and hmac.compare_digest(hash_token(token), stored_hash)
