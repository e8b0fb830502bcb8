"""Real identity providers: JWKS with rotation, aud/iss, several keys, dotted claims.

The JWKS is served on 127.0.0.1 by the test itself; the tokens are shaped
like those of Auth0, Clerk and Supabase (claims as their documentation shows
them), signed with keys the test makes.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pgpulse import auth
from pgpulse.auth import Verifier
from pgpulse.errors import ConfigError
from pgpulse.settings import Settings

from ..support import SECRET, ServerHandle, start_server, until_ready
from .test_auth import assert_refused_ws

ISSUER = "https://tenant.idp.example/"
AUDIENCE = "https://api.pgpulse.example"


class JwksServer:
    """A JWKS endpoint on loopback whose keys the test can rotate."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        self.gate: threading.Event | None = None
        """When set, a fetch waits for it to open, as a slow identity provider would."""
        self.waiting = threading.Event()
        self.garbage: bytes | None = None
        """When set, served instead of the keys, as a broken provider would."""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.gate is not None:
                    outer.waiting.set()
                    outer.gate.wait(30)
                body = outer.garbage or orjson.dumps({"keys": outer.keys})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, *pairs: tuple[str, Any]) -> None:
        self.keys = [jwk(kid, key) for kid, key in pairs]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def jwk(kid: str, private: Any) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        body = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
        body["alg"] = "RS256"
    else:
        body = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    return {**body, "kid": kid, "use": "sig"}


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    try:
        yield server
    finally:
        server.close()


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def auth0_token(private: Any, kid: str, tenant: str, **extra: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "auth0|5f7c8ec7c33c6c004bbafe82",
        "aud": [AUDIENCE, "https://tenant.idp.example/userinfo"],
        "iat": now,
        "exp": now + 600,
        "azp": "my-client-id",
        "scope": "openid profile publish",
        "permissions": ["publish"],
        "https://pgpulse.example/tenant_id": tenant,
        **extra,
    }
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid})


def auth0_server(database_url: str, tmp_path: Path, jwks: JwksServer) -> Any:
    """A server that takes Auth0-shaped tokens, keys from ``jwks``."""
    return start_server(
        database_url,
        tmp_path,
        jwt_secret=None,
        jwks_url=jwks.url,
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
        tenant_claim="https://pgpulse.example/tenant_id",
    )


async def test_auth0_shaped_tokens_through_a_rotating_jwks(
    jwks: JwksServer, database_url: str, tmp_path: Path, tenant: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr(auth, "JWKS_COOLDOWN", 0.5)
    old, new = rsa_key(), rsa_key()
    jwks.publish(("key-1", old))
    async with auth0_server(database_url, tmp_path, jwks) as srv:
        fetched = jwks.requests
        async with srv.connect(auth0_token(old, "key-1", tenant)) as ws:
            assert (await until_ready(ws))[-1]["op"] == "ready"
        assert jwks.requests == fetched  # a known kid needs no fetch

        # The provider rotates: the new key is published, tokens carry its kid.
        jwks.publish(("key-1", old), ("key-2", new))
        await asyncio.sleep(0.6)  # past the cooldown since the last fetch
        async with srv.connect(auth0_token(new, "key-2", tenant)) as ws:
            assert (await until_ready(ws))[-1]["op"] == "ready"
        assert jwks.requests == fetched + 1

        # Made-up kids cannot make the server fetch again and again.
        for _ in range(5):
            await assert_refused_ws(srv, auth0_token(rsa_key(), f"kid-{uuid.uuid4()}", tenant))
        assert jwks.requests <= fetched + 2

        # A key signed by the new kid but forged with another private key is refused.
        await assert_refused_ws(srv, auth0_token(rsa_key(), "key-2", tenant))
        async with srv.http() as http:
            r = await http.get(
                "/api/notifications",
                headers={"Authorization": f"Bearer {auth0_token(new, 'key-2', tenant)}"},
            )
            assert r.status_code == 200


async def test_a_slow_identity_provider_holds_up_only_the_tokens_that_need_it(
    jwks: JwksServer, database_url: str, tmp_path: Path, tenant: str, monkeypatch: Any
) -> None:
    """A fetch of the JWKS runs off the event loop: while the provider is slow to
    answer, requests and sockets with known keys go on; the new key's wait, then pass."""
    monkeypatch.setattr(auth, "JWKS_COOLDOWN", 0.0)
    old, new = rsa_key(), rsa_key()
    jwks.publish(("key-1", old))
    async with (
        auth0_server(database_url, tmp_path, jwks) as srv,
        srv.http() as http,
    ):
        jwks.publish(("key-1", old), ("key-2", new))
        jwks.gate = threading.Event()

        def get(token: str) -> Any:
            return http.get("/api/notifications", headers={"Authorization": f"Bearer {token}"})

        rotated = asyncio.create_task(get(auth0_token(new, "key-2", tenant)))
        assert await asyncio.to_thread(jwks.waiting.wait, 15), "no fetch of the new key"
        # The provider has not answered yet: the rest of the server has not stopped.
        assert (await get(auth0_token(old, "key-1", tenant))).status_code == 200
        async with srv.connect(auth0_token(old, "key-1", tenant)) as ws:
            assert (await until_ready(ws))[-1]["op"] == "ready"
        assert not rotated.done()
        jwks.gate.set()
        r = await asyncio.wait_for(rotated, 15)
        assert r.status_code == 200, r.text


async def test_a_provider_answering_garbage_refuses_new_keys_and_keeps_the_old(
    jwks: JwksServer, database_url: str, tmp_path: Path, tenant: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr(auth, "JWKS_COOLDOWN", 0.0)
    old = rsa_key()
    jwks.publish(("key-1", old))
    async with auth0_server(database_url, tmp_path, jwks) as srv, srv.http() as http:
        jwks.garbage = b"<html>502 Bad Gateway</html>"
        for kid, key, status in (("key-2", rsa_key(), 401), ("key-1", old, 200)):
            token = auth0_token(key, kid, tenant)
            r = await http.get("/api/notifications", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status, (kid, r.text)
        assert jwks.requests >= 2  # the new kid did make it ask


async def test_audience_and_issuer_mismatches_are_refused(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    def token(**claims: Any) -> str:
        base = {"tenant_id": tenant, "exp": int(time.time()) + 600}
        return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")

    async with (
        start_server(
            database_url, tmp_path, jwt_audience="pgpulse", jwt_issuer="https://me.example"
        ) as srv,
        srv.http() as http,
    ):
        good = token(aud="pgpulse", iss="https://me.example")
        refused = {
            "wrong aud": token(aud="another-app", iss="https://me.example"),
            "wrong iss": token(aud="pgpulse", iss="https://evil.example"),
            "no aud": token(iss="https://me.example"),
            "no iss": token(aud="pgpulse"),
        }
        r = await http.get("/api/notifications", headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 200
        for name, bad in refused.items():
            r = await http.get("/api/notifications", headers={"Authorization": f"Bearer {bad}"})
            assert r.status_code == 401, name
            detail = r.json()["detail"]
            assert "aud" in detail or "iss" in detail, (name, detail)
            await assert_refused_ws(srv, bad)


async def test_clerk_shaped_tokens_with_an_organisation_claim(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    private = rsa_key()
    issuer = "https://clerk.app.example"
    now = int(time.time())
    claims = {
        "azp": "https://app.example",
        "exp": now + 60,
        "iat": now,
        "iss": issuer,
        "nbf": now - 5,
        "sid": "sess_2a9Yq",
        "sub": "user_2a9YqKx",
        "aud": "pgpulse",  # from the app's JWT template
        "v": 2,
        "o": {"id": tenant, "rol": "admin", "slg": "acme"},
    }
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "ins_1"})
    async with start_server(
        database_url,
        tmp_path,
        jwt_secret=None,
        jwt_public_key=pem(private),
        jwt_audience="pgpulse",
        jwt_issuer=issuer,
        tenant_claim="o.id",
    ) as srv:
        async with srv.connect(token) as ws:
            assert (await until_ready(ws))[-1]["op"] == "ready"
        principal = srv.app.state.pgpulse.token_auth.verifier.verify(token)
        assert principal.tenant_id == tenant and principal.user_id == "user_2a9YqKx"
        # Without the organisation the token names no tenant: refused.
        del claims["o"]
        await assert_refused_ws(srv, jwt.encode(claims, private, algorithm="RS256"))


async def test_supabase_shaped_tokens_and_two_secrets_at_once(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    project_secret = "super-secret-jwt-token-with-at-least-32-characters-long"
    now = int(time.time())
    claims = {
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "iss": "https://abcdefgh.supabase.co/auth/v1",
        "sub": str(uuid.uuid4()),
        "email": "ann@example.com",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"], "tenant_id": tenant},
        "user_metadata": {"name": "Ann"},
        "role": "authenticated",
        "aal": "aal1",
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    token = jwt.encode(claims, project_secret, algorithm="HS256")
    # Rotation: the new secret first (it signs `pgpulse token`), the old one still verifies.
    async with start_server(
        database_url,
        tmp_path,
        jwt_secret=f"{SECRET},{project_secret}",
        jwt_audience="authenticated",
        jwt_issuer="https://abcdefgh.supabase.co/auth/v1",
        tenant_claim="app_metadata.tenant_id",
    ) as srv:
        async with srv.connect(token) as ws:
            assert (await until_ready(ws))[-1]["op"] == "ready"
        minted = srv.app.state.pgpulse.token_auth.verifier.mint(tenant, "u1")
        assert jwt.decode(minted, SECRET, algorithms=["HS256"], audience="authenticated")[
            "app_metadata"
        ] == {"tenant_id": tenant}
        async with srv.connect(minted) as ws:
            assert (await until_ready(ws))[-1]["op"] == "ready"
        await assert_refused_ws(
            srv, jwt.encode(claims, "a-third-secret-that-nobody-configured-xx", algorithm="HS256")
        )


def test_several_public_keys_and_unsupported_curves(tmp_path: Path) -> None:
    first, second = rsa_key(), ec.generate_private_key(ec.SECP256R1())
    both = pem(first) + pem(second)
    idp = {"jwt_audience": "a", "jwt_issuer": "i", "data_dir": tmp_path}
    verifier = Verifier.from_settings(Settings(jwt_public_key=both, **idp))
    claims = {"tenant_id": "t", "exp": int(time.time()) + 60, "aud": "a", "iss": "i"}
    assert verifier.verify(jwt.encode(claims, first, algorithm="RS256")).tenant_id == "t"
    assert verifier.verify(jwt.encode(claims, second, algorithm="ES256")).tenant_id == "t"

    for curve in (ec.SECP384R1(), ec.SECP521R1(), ec.SECP256K1()):
        key = ec.generate_private_key(curve)
        with pytest.raises(ConfigError, match="not supported"):
            Verifier.from_settings(Settings(jwt_public_key=pem(key), **idp))
    with pytest.raises(ConfigError, match="AUDIENCE"):
        Verifier.from_settings(Settings(jwt_public_key=pem(first), data_dir=tmp_path))
    with pytest.raises(ConfigError, match="https"):
        Verifier.from_settings(Settings(jwks_url="http://idp.example/jwks", **idp))


def test_the_secret_is_a_secret_type(tmp_path: Path) -> None:
    settings = Settings(jwt_secret=SECRET, data_dir=tmp_path)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == SECRET


async def test_query_string_tokens_only_on_the_streams(server: ServerHandle, tenant: str) -> None:
    from ..support import mint

    token = mint(tenant, scopes=["publish"])
    async with server.http() as http:
        r = await http.get("/api/notifications", params={"token": token})
        assert r.status_code == 401 and "Authorization" in r.json()["detail"]
        r = await http.post("/api/events", params={"token": token}, json={"type": "x", "data": 1})
        assert r.status_code == 401
        async with http.stream("GET", "/sse", params={"token": token}) as r:
            assert r.status_code == 200
    async with server.connect(token) as ws:
        assert (await until_ready(ws))[-1]["op"] == "ready"


def test_tokens_never_reach_the_server_log(database_url: str, tmp_path: Path, tenant: str) -> None:
    import websockets.sync.client as ws_client

    from ..support import ServerProcess, free_port, mint, serve_env

    token = mint(tenant)
    server = ServerProcess([], serve_env(database_url, tmp_path), free_port())
    try:
        server.wait_ready()
        base = server.url.replace("http://", "ws://")
        signature = token.rsplit(".", 1)[1]
        for query in (f"token={token}", f"%74oken={token}", f"tok%65n={token}&topics=a"):
            with ws_client.connect(f"{base}/ws?{query}", open_timeout=10) as ws:
                ws.recv(timeout=10)  # ready: the request was logged by now
        httpx.get(f"{server.url}/api/notifications?token={token}", timeout=10)
    finally:
        server.stop()
        log = server.output()
        server.close()
    assert "/ws?" in log and "=***" in log  # the requests were logged, tokens redacted
    assert signature not in log, log[-2000:]
