"""Contract §1: every refused token is refused before any event flows."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.exceptions import ConnectionClosed

from ..support import SECRET, ServerHandle, mint, recv, start_server, until_ready


def hs(claims: dict[str, object], key: str = SECRET, alg: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short keys are the point of some of these tokens
        return jwt.encode(claims, key, algorithm=alg)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def none_alg(claims: dict[str, object]) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def forged_hs256(claims: dict[str, object], key: str) -> str:
    """HS256 keyed with a public key: what PyJWT itself would refuse to make."""
    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + b64(json.dumps(claims).encode())
    )
    mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def refused_tokens(tenant: str) -> dict[str, str]:
    exp = int(time.time()) + 600
    return {
        "malformed": "not-a-jwt",
        "expired": hs({"tenant_id": tenant, "exp": int(time.time()) - 60}),
        "wrong secret": hs(
            {"tenant_id": tenant, "exp": exp}, key="another-secret-0123456789abcdef-0123456789"
        ),
        "alg none": none_alg({"tenant_id": tenant, "exp": exp}),
        "no exp": hs({"tenant_id": tenant}),
        "no tenant": hs({"sub": "u", "exp": exp}),
        "tenant not a string": hs({"tenant_id": 42, "exp": exp}),
        "HS512": hs({"tenant_id": tenant, "exp": exp}, alg="HS512"),
    }


async def assert_refused_ws(server: ServerHandle, token: str | None, **params: str) -> None:
    query = {"token": token} if token is not None else {}
    query.update(params)
    import websockets

    qs = "&".join(f"{k}={v}" for k, v in query.items())
    async with websockets.connect(f"{server.ws_url}/ws?{qs}", open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as info:
            frame = await recv(ws)
            raise AssertionError(f"refused socket got a frame: {frame}")
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008


async def test_refused_tokens_get_1008_and_no_event(server: ServerHandle, tenant: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        server.runtime.database_url, autocommit=True
    ) as c:
        await c.execute("SELECT pgpulse.publish(%s, 't', 'x', '{}')", [tenant])
    for name, token in refused_tokens(tenant).items():
        try:
            await assert_refused_ws(server, token, last_event_id="0")
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    await assert_refused_ws(server, None, last_event_id="0")
    await assert_refused_ws(server, None, tenant_id=tenant)  # dev mode is off
    await assert_refused_ws(server, mint(tenant, topics=["a"]), topics="b", last_event_id="0")


async def test_refused_tokens_on_http(server: ServerHandle, tenant: str) -> None:
    async with server.http() as http:
        for name, token in refused_tokens(tenant).items():
            r = await http.get("/api/notifications", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, name
            r = await http.get("/sse", params={"token": token})
            assert r.status_code == 401, name
        r = await http.get("/api/notifications", params={"tenant_id": tenant})
        assert r.status_code == 401
        r = await http.post(
            "/api/events",
            json={"type": "x", "data": {}},
            headers={"Authorization": f"Bearer {mint(tenant)}"},
        )
        assert r.status_code == 403 and "publish" in r.json()["detail"]
        r = await http.get("/sse", params={"token": mint(tenant, topics=["a"]), "topics": "b"})
        assert r.status_code == 403


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_public_key_and_algorithm_confusion(
    kind: str, database_url: str, tmp_path: object, tenant: str
) -> None:
    from pathlib import Path

    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    alg = "RS256" if kind == "rsa" else "ES256"
    exp = int(time.time()) + 600
    assert isinstance(tmp_path, Path)
    idp = {"jwt_audience": "pgpulse", "jwt_issuer": "https://idp.example"}
    async with start_server(
        database_url, tmp_path, jwt_public_key=pem, jwt_secret=None, **idp
    ) as srv:
        claims = {"tenant_id": tenant, "exp": exp, "aud": "pgpulse", "iss": "https://idp.example"}
        good = jwt.encode(claims, private, algorithm=alg)
        async with srv.connect(good) as ws:
            ready = await until_ready(ws)
            assert ready[-1]["op"] == "ready"
        # Algorithm confusion: HS256 "signed" with the public key as secret.
        forged = forged_hs256(claims, pem)
        await assert_refused_ws(srv, forged)
        await assert_refused_ws(srv, mint(tenant))  # an HS256 token is not accepted at all
        await assert_refused_ws(srv, none_alg(claims))


async def test_insecure_dev_mode_is_explicit(
    database_url: str, tmp_path: object, tenant: str
) -> None:
    from pathlib import Path

    import websockets

    assert isinstance(tmp_path, Path)
    async with start_server(database_url, tmp_path, insecure_dev=True) as srv:
        async with srv.http() as http:
            assert (await http.get("/healthz")).json()["insecure_dev"] is True
        async with websockets.connect(f"{srv.ws_url}/ws?tenant_id={tenant}") as ws:
            assert (await until_ready(ws))[-1]["op"] == "ready"
