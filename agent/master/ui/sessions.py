"""Dashboard sessions: a signed cookie that proves a login, and the CSRF token of its forms.

The cookie never holds the API key. It holds a random CSRF token, whether the
holder logged in, and when it expires, signed with HMAC-SHA256. With an API
key the signing secret is derived from the key, so sessions survive a
restart, are valid on every master sharing the key, and all end when the key
changes; without one (nobody logs in) a random secret per process is enough,
as the session then only carries the CSRF token.

Plain code: nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time

import attrs

__all__ = ["SESSION_LIFETIME_S", "Session", "SessionSigner"]

# A working day: long enough not to interrupt an operator, short enough that a
# cookie copied from a shared machine stops working by the next morning.
SESSION_LIFETIME_S = 12 * 3600
_PURPOSE = b"ffrtmp-agent dashboard session v1"


@attrs.frozen
class Session:
    """One browser's session: its CSRF token, whether it logged in, and until when it is valid."""

    csrf: str
    operator: bool
    expires: int

    @classmethod
    def new(cls, *, operator: bool, now: float | None = None) -> Session:
        """A fresh session with a new CSRF token; a login always starts one, so a token seen before it is void."""
        issued = time.time() if now is None else now
        return cls(csrf=secrets.token_urlsafe(32), operator=operator, expires=int(issued) + SESSION_LIFETIME_S)

    def csrf_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), token.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Turns sessions into cookie values and back, refusing any value it did not sign or that expired."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def for_key(cls, api_key: str) -> SessionSigner:
        """Sign with a secret derived from ``api_key``; with no key, a random one for this process."""
        if not api_key:
            return cls(secrets.token_bytes(32))
        return cls(hmac.new(api_key.encode(), _PURPOSE, hashlib.sha256).digest())

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def dumps(self, session: Session) -> str:
        payload = _b64(json.dumps(attrs.asdict(session), separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def loads(self, value: str, now: float | None = None) -> Session | None:
        """The session in a cookie value; None when it is not one this signer made, or has expired."""
        payload, _, mac = value.partition(".")
        if not mac or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(csrf=str(data["csrf"]), operator=data["operator"] is True, expires=int(data["expires"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        return session if session.expires > (time.time() if now is None else now) else None
