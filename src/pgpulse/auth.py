"""Who is connecting: verified JWTs become a :class:`Principal`.

The tenant always comes from a verified token (contract §1). The accepted
algorithms are fixed by the configuration, never by the token's header: with
a public key only RS256/ES256 (matching the key's type), with a secret only
HS256. So ``alg: none`` and algorithm confusion (a public key used as an HMAC
secret) are refused by construction.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .errors import AuthError, ConfigError, ForbiddenTopic
from .events import MAX_NAME_LENGTH, is_name
from .limits import MAX_TOKEN_BYTES, parse_topics
from .settings import Settings

log = logging.getLogger("pgpulse.auth")

SECRET_BYTES = 48
LEEWAY = 5  # seconds of clock skew tolerated on exp/nbf/iat
VERIFIED_CACHE_SIZE = 10_000  # verified tokens remembered (the whole token is the key)


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: its tenant, user, readable topics and scopes."""

    tenant_id: str
    user_id: str | None = None
    topics: frozenset[str] | None = None
    """Topics the token may read; ``None`` means all."""
    scopes: frozenset[str] = frozenset()

    def allowed_topics(self, requested: str | None) -> frozenset[str] | None:
        """The topics a connection reads: the requested ones, each allowed by the token.

        Raises :class:`ValueError` for a malformed list (see
        :func:`pgpulse.limits.parse_topics`), :class:`ForbiddenTopic` for a
        topic the token does not allow.
        """
        wanted = parse_topics(requested)
        if wanted is None:
            return self.topics
        if self.topics is not None and not wanted <= self.topics:
            denied = ", ".join(sorted(wanted - self.topics))
            raise ForbiddenTopic(f"token does not allow topic(s): {denied}")
        return wanted


class Verifier:
    """Verifies (and, with a shared secret, mints) tokens under one configuration."""

    def __init__(
        self,
        key: Any,
        algorithms: list[str],
        tenant_claim: str = "tenant_id",
        topics_claim: str = "topics",
        signing_key: str | None = None,
    ) -> None:
        self._key = key
        self._algorithms = algorithms
        self._tenant_claim = tenant_claim
        self._topics_claim = topics_claim
        self._signing_key = signing_key
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> Verifier:
        claims = {"tenant_claim": settings.tenant_claim, "topics_claim": settings.topics_claim}
        if settings.jwt_public_key:
            pem = _read_pem(settings.jwt_public_key)
            try:
                key = load_pem_public_key(pem.encode())
            except ValueError as exc:
                raise ConfigError(
                    f"PGPULSE_JWT_PUBLIC_KEY is not a PEM public key: {exc}"
                ) from None
            if isinstance(key, rsa.RSAPublicKey):
                algorithms = ["RS256"]
            elif isinstance(key, ec.EllipticCurvePublicKey):
                algorithms = ["ES256"]
            else:
                raise ConfigError("PGPULSE_JWT_PUBLIC_KEY must be an RSA or EC (P-256) key")
            return cls(key, algorithms, **claims)
        secret = settings.jwt_secret or load_or_create_secret(settings.secret_file)
        return cls(secret, ["HS256"], signing_key=secret, **claims)

    def verify(self, token: str) -> Principal:
        """The token's principal. Verified tokens are remembered until they expire:
        a client presents the same token on every request, and checking a
        signature costs more than the rest of a publish."""
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(f"token is {len(token)} bytes; the limit is {MAX_TOKEN_BYTES}")
        hit = self._verified.get(token)
        if hit is not None:
            principal, expires = hit
            if time.time() < expires:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                options={"require": ["exp"], "verify_aud": False},
                leeway=LEEWAY,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the required claim {exc.claim!r}") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(
                f"token algorithm not accepted (this server accepts {', '.join(self._algorithms)})"
            ) from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature is invalid") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"token is invalid: {exc}") from None
        principal = self._principal(claims)
        self._verified[token] = (principal, float(claims["exp"]) + LEEWAY)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    def _principal(self, claims: dict[str, Any]) -> Principal:
        tenant = claims.get(self._tenant_claim)
        if not is_name(tenant):
            raise AuthError(
                f"token claim {self._tenant_claim!r} must be a string of 1 to "
                f"{MAX_NAME_LENGTH} characters"
            )
        sub = claims.get("sub")
        if sub is not None and not is_name(sub):
            raise AuthError(
                f"token claim 'sub' must be a string of 1 to {MAX_NAME_LENGTH} characters"
            )
        topics = claims.get(self._topics_claim)
        if topics is not None and (
            not isinstance(topics, list) or not all(isinstance(t, str) for t in topics)
        ):
            raise AuthError(f"token claim {self._topics_claim!r} must be a list of strings")
        if topics is not None and not all(is_name(t) for t in topics):
            raise AuthError(
                f"token claim {self._topics_claim!r} holds a topic that is not 1 to "
                f"{MAX_NAME_LENGTH} characters without NUL"
            )
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise AuthError("token claim 'scope' must be a space-separated string")
        return Principal(
            tenant_id=tenant,
            user_id=sub,
            topics=frozenset(topics) if topics is not None else None,
            scopes=frozenset(scope.split()),
        )

    def mint(
        self,
        tenant_id: str,
        user_id: str | None = None,
        scopes: list[str] | None = None,
        topics: list[str] | None = None,
        ttl: float = 3600.0,
    ) -> str:
        """A signed token for ``tenant_id``; only with a shared secret (HS256)."""
        if self._signing_key is None:
            raise ConfigError(
                "this server verifies tokens with a public key; mint them with the private key"
            )
        now = int(time.time())
        claims: dict[str, Any] = {self._tenant_claim: tenant_id, "iat": now, "exp": now + int(ttl)}
        if user_id is not None:
            claims["sub"] = user_id
        if scopes:
            claims["scope"] = " ".join(scopes)
        if topics is not None:
            claims[self._topics_claim] = topics
        return jwt.encode(claims, self._signing_key, algorithm="HS256")


def _read_pem(value: str) -> str:
    """The key itself, or the contents of the file it names."""
    if "-----BEGIN" in value:
        return value
    path = Path(value).expanduser()
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read PGPULSE_JWT_PUBLIC_KEY file {path}: {exc.strerror}"
        ) from None


def load_or_create_secret(path: Path) -> str:
    """The generated HS256 secret: created once (0600, in a 0700 folder), then reused.

    ``O_EXCL`` makes concurrent first starts agree: one writes, the others read.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            secret = path.read_text().strip()
            if secret:
                return secret
            time.sleep(0.01)
        raise ConfigError(
            f"the secret file {path} is empty; delete it to generate a new one"
        ) from None
    secret = secrets.token_urlsafe(SECRET_BYTES)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    log.info("generated a new JWT secret in %s", path)
    return secret
