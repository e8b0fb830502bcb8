"""Token verification without a server: claims, algorithms, and the verified-token cache."""

from __future__ import annotations

import time

import jwt
import pytest

from pgpulse.auth import LEEWAY, Verifier
from pgpulse.errors import AuthError, ForbiddenTopic

SECRET = "unit-secret-0123456789abcdef-0123456789"


def verifier() -> Verifier:
    return Verifier(SECRET, ["HS256"], signing_key=SECRET)


def test_claims_become_a_principal() -> None:
    v = verifier()
    p = v.verify(v.mint("acme", "u1", ["publish"], ["a", "b"]))
    assert (p.tenant_id, p.user_id, p.topics, p.scopes) == (
        "acme",
        "u1",
        frozenset({"a", "b"}),
        frozenset({"publish"}),
    )
    assert p.allowed_topics("a") == frozenset({"a"})
    assert p.allowed_topics(None) == frozenset({"a", "b"})
    with pytest.raises(ForbiddenTopic, match="c"):
        p.allowed_topics("a,c")


def test_cache_never_accepts_another_signature() -> None:
    v = verifier()
    good = v.mint("acme")
    assert v.verify(good).tenant_id == "acme"
    header, payload, _ = good.split(".")
    forged = jwt.encode(
        jwt.decode(good, options={"verify_signature": False}),
        "another-secret-0123456789abcdef-01234",
        algorithm="HS256",
    )
    assert forged.split(".")[:2] == [header, payload]
    with pytest.raises(AuthError, match="signature"):
        v.verify(forged)
    assert v.verify(good).tenant_id == "acme"  # still cached, still fine


def test_cached_token_still_expires() -> None:
    v = verifier()
    now = int(time.time())
    token = jwt.encode({"tenant_id": "acme", "exp": now - LEEWAY + 1}, SECRET, algorithm="HS256")
    assert v.verify(token).tenant_id == "acme"
    time.sleep(1.5)  # the token's own lifetime running out: nothing else to await
    with pytest.raises(AuthError, match="expired"):
        v.verify(token)


def test_tokens_over_8_kib_are_refused_before_decoding() -> None:
    from pgpulse.limits import MAX_TOKEN_BYTES

    secret = "s" * 32
    verifier = Verifier(secret, ["HS256"], signing_key=secret)
    with pytest.raises(AuthError, match="limit"):
        verifier.verify("x" * (MAX_TOKEN_BYTES + 1))


def test_close_reasons_are_cut_by_bytes_not_characters() -> None:
    from pgpulse.limits import close_reason

    assert close_reason("short") == "short"
    cut = close_reason("é" * 100)
    assert len(cut.encode()) <= 123 and cut == "é" * 61


@pytest.mark.parametrize(
    "line",
    [
        '127.0.0.1:5 - "GET /ws?token=abc.def.ghi&topics=a HTTP/1.1" 101',
        '"GET /sse?topics=a&%74oken=abc.def.ghi HTTP/1.1"',
        '"GET /sse?tok%65n=abc.def.ghi"',
        '"GET /sse?%2574oken=abc.def.ghi"',
        '"GET /sse?TOKEN=abc.def.ghi"',
        '"GET /sse?x=1;token=abc.def.ghi"',
        "token=abc.def.ghi",
    ],
)
def test_tokens_are_redacted_from_logs_however_encoded(line: str) -> None:
    from pgpulse.app import RedactTokens

    assert "abc.def.ghi" not in RedactTokens.redact(line)
    assert "topics=a" in RedactTokens.redact(line + "&topics=a")


def test_anything_shaped_like_a_jwt_is_redacted() -> None:
    from pgpulse.app import RedactTokens

    token = verifier().mint("acme")
    assert token not in RedactTokens.redact(f"refused {token} from 10.0.0.1")
