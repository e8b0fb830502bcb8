"""The app's login session: a signed cookie, made with the standard library.

The cookie holds the user's id and an expiry, signed with HMAC-SHA256 under
the app's secret key, so a browser can carry it but not forge or alter it.
It is ``HttpOnly`` (scripts cannot read it) and ``SameSite=Lax`` (other
sites' requests do not carry it). Serve the app over HTTPS in production and
set ``secure=True``.

pgpulse never sees this cookie's format: the app turns it into a
:class:`pgpulse.fastapi.Principal` in ``app.py``, for the WebSocket and the
HTTP routes alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

COOKIE_NAME = "example_session"
SESSION_SECONDS = 8 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Makes and reads session cookies under one secret key."""

    def __init__(self, secret_key: bytes) -> None:
        if len(secret_key) < 32:
            raise ValueError("the session secret key must be at least 32 bytes")
        self._key = secret_key

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def make(self, user_id: int, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_SECONDS)
        payload = _b64(json.dumps({"uid": user_id, "exp": expires}).encode())
        return f"{payload}.{self._sign(payload)}"

    def read(self, cookie: str | None, now: float | None = None) -> int | None:
        """The user id in a valid, unexpired cookie; None for anything else."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        user_id, expires = data.get("uid"), data.get("exp")
        if not isinstance(user_id, int) or not isinstance(expires, int):
            return None
        if expires < (now or time.time()):
            return None
        return user_id
