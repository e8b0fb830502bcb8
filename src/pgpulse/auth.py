"""Who is connecting: verified JWTs become a :class:`Principal`.

The tenant always comes from a verified token (contract §1). The accepted
algorithms are fixed by the configuration, never by the token's header: with
a public key only RS256/ES256 (matching the key's type), with a secret only
HS256. So ``alg: none`` and algorithm confusion (a public key used as an HMAC
secret) are refused by construction.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .errors import AuthError, ConfigError, ForbiddenTopic
from .events import MAX_NAME_LENGTH, is_name
from .limits import MAX_TOKEN_BYTES, parse_topics
from .settings import Settings

log = logging.getLogger("pgpulse.auth")

ADMIN_SCOPE = "admin"
"""The scope of the console and ``/api/admin``: every tenant's state, and tokens for any."""
ADMIN_TENANT = "*"
"""The tenant claim of admin tokens minted here: an admin token reads no one tenant
(the admin API ignores its tenant; tenant sockets get tokens of their own)."""
SECRET_BYTES = 48
LEEWAY = 5  # seconds of clock skew tolerated on exp/nbf/iat
VERIFIED_CACHE_SIZE = 10_000  # verified tokens remembered (the whole token is the key)
MIN_RSA_BITS = 2048
JWKS_ALGORITHMS = {"RS256", "ES256"}
JWKS_TIMEOUT = 3.0  # seconds for one fetch of the identity provider's keys
JWKS_COOLDOWN = 30.0  # seconds between two fetches, however many unknown kids arrive
JWKS_MAX_AGE = 600.0  # seconds after which the set is fetched again at the next token


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: its tenant, user, readable topics and scopes.

    pgpulse's JWT provider makes one from a token; in library mode the app's
    own dependency returns one (from its session cookie, its own tokens).
    ``topics`` and ``scopes`` may be given as any iterable of strings.
    """

    tenant_id: str
    user_id: str | None = None
    """Per-user events (``user_id`` set when published) reach only this user."""
    topics: frozenset[str] | None = None
    """Topics the caller may read; ``None`` means all."""
    scopes: frozenset[str] = frozenset()
    """``publish`` allows ``POST /api/events`` and ``POST /api/notifications``, ``jobs``
    allows ``POST /api/jobs``."""
    expires_at: float | None = None
    """The token's ``exp`` (Unix time): when the connections it opened are closed;
    ``None`` (an app's own principal, insecure dev mode) never expires."""

    def __post_init__(self) -> None:
        if not is_name(self.tenant_id):
            raise ValueError(
                f"Principal.tenant_id must be a string of 1 to {MAX_NAME_LENGTH} characters, "
                f"got {self.tenant_id!r:.60}"
            )
        if self.user_id is not None and not is_name(self.user_id):
            raise ValueError(
                f"Principal.user_id must be None or a string of 1 to {MAX_NAME_LENGTH} "
                f"characters, got {self.user_id!r:.60}"
            )
        for name in ("topics", "scopes"):
            value = getattr(self, name)
            if value is None or isinstance(value, frozenset):
                continue
            if isinstance(value, str):  # "a,b" would become {"a", ",", "b"}
                raise ValueError(f"Principal.{name} must be a collection of strings, not a string")
            object.__setattr__(self, name, frozenset(value))

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
    """Verifies (and, with a shared secret, mints) tokens under one configuration.

    ``key`` and ``algorithms`` are one key and what it may sign; ``keys``
    adds more (several secrets or public keys valid at once, for rotation),
    and ``jwks`` more again, fetched from an identity provider and picked by
    the token's ``kid``. Every key is tried only with its own algorithms, so
    a token never chooses how it is checked.
    """

    def __init__(
        self,
        key: Any = None,
        algorithms: list[str] | None = None,
        tenant_claim: str = "tenant_id",
        topics_claim: str = "topics",
        signing_key: str | None = None,
        *,
        keys: list[tuple[Any, list[str]]] | None = None,
        jwks: JwksKeys | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        user_claim: str = "sub",
    ) -> None:
        self._keys: list[tuple[Any, list[str]]] = []
        if key is not None:
            self._keys.append((key, algorithms or ["HS256"]))
        self._keys.extend(keys or [])
        self._jwks = jwks
        if not self._keys and jwks is None:
            raise ConfigError("no key to verify tokens with")
        self._algorithms = sorted(
            {alg for _, algs in self._keys for alg in algs} | (JWKS_ALGORITHMS if jwks else set())
        )
        self._tenant_claim = tenant_claim
        self._topics_claim = topics_claim
        self._user_claim = user_claim
        self._audience = audience
        self._issuer = issuer
        self._signing_key = signing_key
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> Verifier:
        """The verifier ``settings`` describe; a :class:`ConfigError` for anything unusable."""
        options: dict[str, Any] = {
            "tenant_claim": settings.tenant_claim,
            "topics_claim": settings.topics_claim,
            "user_claim": settings.user_claim,
            "audience": settings.jwt_audience,
            "issuer": settings.jwt_issuer,
        }
        if settings.jwt_public_key or settings.jwks_url:
            if not settings.jwt_audience or not settings.jwt_issuer:
                raise ConfigError(
                    "with PGPULSE_JWT_PUBLIC_KEY or PGPULSE_JWKS_URL, set PGPULSE_JWT_AUDIENCE "
                    "and PGPULSE_JWT_ISSUER too: an identity provider signs tokens for other "
                    "apps as well, and only these two tell them apart"
                )
            keys = public_keys(settings.jwt_public_key) if settings.jwt_public_key else []
            jwks = JwksKeys(settings.jwks_url) if settings.jwks_url else None
            if jwks is not None:
                jwks.load_at_start()
            return cls(keys=keys, jwks=jwks, **options)
        if settings.jwt_secret is not None:
            secrets_ = split_secrets(settings.jwt_secret.get_secret_value())
        else:
            secrets_ = [load_or_create_secret(settings.secret_file)]
        keys = [(secret, ["HS256"]) for secret in secrets_]
        return cls(keys=keys, signing_key=secrets_[0], **options)

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
        claims = self._decode(token)
        principal = self._principal(claims)
        self._verified[token] = (principal, float(claims["exp"]) + LEEWAY)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def verify_async(self, token: str) -> Principal:
        """:meth:`verify` for async code: a fetch of the identity provider's keys that
        ``token`` needs runs in a thread, where ``verify`` would run it in the event
        loop and stall every connection of the process while the provider answers."""
        if self._jwks is not None and token not in self._verified:
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.PyJWTError:
                kid = None  # verify says why
            if isinstance(kid, str) and kid:
                await self._jwks.prepare(kid)
        return self.verify(token)

    def _candidates(self, token: str) -> list[tuple[Any, list[str]]]:
        """The keys that may have signed ``token``: its ``kid``'s from the JWKS, then the rest."""
        if self._jwks is None:
            return self._keys
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise AuthError(f"token is invalid: {exc}") from None
        if not isinstance(kid, str) or not kid:
            if self._keys:
                return self._keys
            raise AuthError("token has no 'kid' header; keys are picked by kid")
        found = self._jwks.key(kid)
        if found is None:
            if self._keys:
                return self._keys
            raise AuthError(f"token key id {kid[:40]!r} is not among the identity provider's keys")
        return [(found.key, [found.algorithm_name]), *self._keys]

    def _decode(self, token: str) -> dict[str, Any]:
        required = ["exp"]
        if self._audience is not None:
            required.append("aud")
        if self._issuer is not None:
            required.append("iss")
        refusal = "token signature is invalid"
        for key, algorithms in self._candidates(token):
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=algorithms,
                    audience=self._audience,
                    issuer=self._issuer,
                    options={"require": required, "verify_aud": self._audience is not None},
                    leeway=LEEWAY,
                )
                return claims
            except jwt.InvalidSignatureError:
                continue  # another key (an older secret, a rotated key) may have signed it
            except jwt.InvalidAlgorithmError:
                refusal = (
                    f"token algorithm not accepted (this server accepts "
                    f"{', '.join(self._algorithms)})"
                )
                continue
            except jwt.ExpiredSignatureError:
                raise AuthError("token expired") from None
            except jwt.MissingRequiredClaimError as exc:
                raise AuthError(f"token lacks the required claim {exc.claim!r}") from None
            except jwt.InvalidAudienceError:
                raise AuthError(f"token audience is not {self._audience!r}") from None
            except jwt.InvalidIssuerError:
                raise AuthError(f"token issuer is not {self._issuer!r}") from None
            except jwt.PyJWTError as exc:
                raise AuthError(f"token is invalid: {exc}") from None
        raise AuthError(refusal)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        tenant = claim(claims, self._tenant_claim)
        if not is_name(tenant):
            raise AuthError(
                f"token claim {self._tenant_claim!r} must be a string of 1 to "
                f"{MAX_NAME_LENGTH} characters"
            )
        sub = claim(claims, self._user_claim)
        if sub is not None and not is_name(sub):
            raise AuthError(
                f"token claim {self._user_claim!r} must be a string of 1 to "
                f"{MAX_NAME_LENGTH} characters"
            )
        topics = claim(claims, self._topics_claim)
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
        if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
            scopes = frozenset(scope)  # some providers send a list
        elif isinstance(scope, str):
            scopes = frozenset(scope.split())
        else:
            raise AuthError("token claim 'scope' must be a space-separated string")
        return Principal(
            tenant_id=tenant,
            user_id=sub,
            topics=frozenset(topics) if topics is not None else None,
            scopes=scopes,
            expires_at=float(claims["exp"]),
        )

    def mint(
        self,
        tenant_id: str,
        user_id: str | None = None,
        scopes: list[str] | None = None,
        topics: list[str] | None = None,
        ttl: float = 3600.0,
    ) -> str:
        """A signed token for ``tenant_id``; only with a shared secret (HS256).

        Signed with the first secret: during a rotation that is the new one.
        """
        if self._signing_key is None:
            raise ConfigError(
                "this server verifies tokens with a public key; mint them with the private key"
            )
        now = int(time.time())
        claims: dict[str, Any] = {"iat": now, "exp": now + int(ttl)}
        _set_claim(claims, self._tenant_claim, tenant_id)
        if user_id is not None:
            _set_claim(claims, self._user_claim, user_id)
        if scopes:
            claims["scope"] = " ".join(scopes)
        if topics is not None:
            _set_claim(claims, self._topics_claim, topics)
        if self._audience is not None:
            claims["aud"] = self._audience
        if self._issuer is not None:
            claims["iss"] = self._issuer
        return jwt.encode(claims, self._signing_key, algorithm="HS256")


def claim(claims: dict[str, Any], path: str) -> Any:
    """The claim at ``path``: a top-level name first (Auth0's namespaced claims are
    URLs, dots and all), else a dotted path into nested objects
    (``app_metadata.tenant_id``, Clerk's ``o.id``)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _set_claim(claims: dict[str, Any], path: str, value: Any) -> None:
    """Put ``value`` where :func:`claim` finds it (nested for a dotted path)."""
    parts = path.split(".")
    target = claims
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def split_secrets(value: str) -> list[str]:
    """Several HS256 secrets, comma-separated: the first signs, all verify."""
    return [s.strip() for s in value.split(",") if s.strip()]


_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def public_keys(value: str) -> list[tuple[Any, list[str]]]:
    """Every PEM public key in ``value`` (or in the file it names), each with its algorithm.

    RSA keys (2048 bits or more) sign RS256 and P-256 keys ES256; any other
    key or curve is refused here, at start, rather than failing every token.
    """
    pem = _read_pem(value)
    blocks = _PEM_BLOCK.findall(pem) or [pem]
    keys: list[tuple[Any, list[str]]] = []
    for number, block in enumerate(blocks, 1):
        which = (
            f"PGPULSE_JWT_PUBLIC_KEY (key {number})"
            if len(blocks) > 1
            else ("PGPULSE_JWT_PUBLIC_KEY")
        )
        try:
            key = load_pem_public_key(block.encode())
        except ValueError as exc:
            raise ConfigError(f"{which} is not a PEM public key: {exc}") from None
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                raise ConfigError(
                    f"{which} is a {key.key_size}-bit RSA key; at least {MIN_RSA_BITS} bits"
                )
            keys.append((key, ["RS256"]))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise ConfigError(
                    f"{which} is on curve {key.curve.name}, which is not supported: "
                    f"use P-256 (ES256) or RSA (RS256)"
                )
            keys.append((key, ["ES256"]))
        else:
            raise ConfigError(f"{which} must be an RSA or EC P-256 key")
    return keys


class JwksKeys:
    """An identity provider's signing keys, from its JWKS URL, picked by ``kid``.

    The set is fetched at start and kept. A ``kid`` it does not hold (the
    provider rotated its keys) makes it fetch again, and so does age
    (:data:`JWKS_MAX_AGE`, so that a withdrawn key stops working); at most
    once per :data:`JWKS_COOLDOWN`, so tokens with made-up ``kid``s cannot
    make the server hammer the provider. A failed fetch keeps the last good
    set. Keys of other algorithms than RS256 and ES256 are skipped.

    PyJWT's :class:`jwt.PyJWKClient` fetches synchronously, with a short
    timeout. The server's paths verify with :meth:`Verifier.verify_async`,
    whose :meth:`prepare` fetches in a thread (one fetch however many callers
    wait for it): an unknown ``kid`` waits for it, an old set is used while
    it is renewed. Only :meth:`Verifier.verify` fetches in the caller's thread.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ConfigError(
                f"PGPULSE_JWKS_URL must be https (plain http only on loopback), got {url!r}"
            )
        self.url = url
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=JWKS_TIMEOUT)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = -math.inf
        self._attempted = -math.inf
        self._inflight: asyncio.Future[None] | None = None
        self.fetches = 0

    def load_at_start(self) -> None:
        """Fetch now; a provider that is down only delays the keys (logged), it does not stop
        the server."""
        try:
            self._fetch()
        except jwt.PyJWTError as exc:
            log.warning("cannot fetch the JWKS at %s yet: %s", self.url, exc)

    def key(self, kid: str) -> jwt.PyJWK | None:
        if self._due(kid):
            self._fetch_logged()
        return self._keys.get(kid)

    async def prepare(self, kid: str) -> None:
        """Fetch in a thread if :meth:`key` would fetch; wait only if ``kid`` is unknown."""
        inflight = self._inflight
        if inflight is not None and inflight.get_loop() is not asyncio.get_running_loop():
            self._inflight = None  # begun in a loop that is gone (an app run twice in a process)
        if self._inflight is None:
            if not self._due(kid):
                return
            self._attempted = time.monotonic()  # key() must not fetch meanwhile
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._fetch_logged))
            self._inflight.add_done_callback(self._fetched_now)
        if kid not in self._keys:
            await asyncio.shield(self._inflight)

    def _fetched_now(self, _: asyncio.Future[None]) -> None:
        self._inflight = None

    def _due(self, kid: str) -> bool:
        now = time.monotonic()
        wanted = kid not in self._keys or now - self._fetched > JWKS_MAX_AGE
        return wanted and now - self._attempted >= JWKS_COOLDOWN

    def _fetch_logged(self) -> None:
        """Fetch, keeping the last good set on any failure: a provider's bad answer
        refuses tokens with unknown keys, it never fails a request with a 500."""
        try:
            self._fetch()
        except Exception as exc:
            log.warning("cannot fetch the JWKS at %s: %s", self.url, exc)

    def _fetch(self) -> None:
        self._attempted = time.monotonic()
        self.fetches += 1
        jwk_set = self._client.get_jwk_set(refresh=True)
        keys: dict[str, jwt.PyJWK] = {}
        for jwk in jwk_set.keys:
            if not jwk.key_id or jwk.public_key_use not in ("sig", None):
                continue
            if jwk.algorithm_name not in JWKS_ALGORITHMS:
                log.warning(
                    "JWKS key %r uses %s, which is not supported (RS256, ES256); skipped",
                    jwk.key_id,
                    jwk.algorithm_name,
                )
                continue
            keys[jwk.key_id] = jwk
        self._keys = keys
        self._fetched = time.monotonic()


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
