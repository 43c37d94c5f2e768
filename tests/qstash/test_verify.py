"""Signature verification: the real reason is reported, small clock skew is tolerated."""

from __future__ import annotations

import time

import jwt
import pytest

from lib.errors import InvalidSignature
from lib.local.qstash.signing import sign
from lib.qstash.verify import Verifier
from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY

URL = "https://app.example/api/worker/paid/text/stream"
BODY = b'{"task_id": "t1"}'


@pytest.fixture
def verifier() -> Verifier:
    """A verifier with the dev keys and the default 5 s tolerance."""
    return Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)


@pytest.mark.parametrize("key", [DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY])
def test_accepts_current_and_next_key(verifier: Verifier, key: str) -> None:
    """A signature made with either key is accepted."""
    verifier.verify(sign(key, url=URL, body=BODY), BODY, URL)


def test_accepts_non_utf8_body(verifier: Verifier) -> None:
    """Binary bodies (which the SDK's str-only Receiver cannot take) still verify."""
    body = bytes(range(256))
    verifier.verify(sign(DEV_CURRENT_SIGNING_KEY, url=URL, body=body), body, URL)


# A signature is (signing key, signed URL) and is made when the test runs: one made at
# collection would expire (300 s) before a long suite reaches it.
Signed = tuple[str, str]


@pytest.mark.parametrize(
    ("signature", "body", "url", "reason"),
    [
        (None, BODY, URL, "missing Upstash-Signature header"),
        ("", BODY, URL, "missing Upstash-Signature header"),
        ("not.a.jwt", BODY, URL, "malformed token"),
        (("sig_" + "w" * 28, URL), BODY, URL, "bad signature"),
        ((DEV_CURRENT_SIGNING_KEY, URL), b'{"task_id": "t2"}', URL, "body hash"),
        ((DEV_CURRENT_SIGNING_KEY, URL), BODY, URL + "x", "wrong subject"),
        ((DEV_CURRENT_SIGNING_KEY, URL.replace("https", "http")), BODY, URL, "wrong subject"),
    ],
)
def test_rejections_name_the_reason(
    verifier: Verifier, signature: str | Signed | None, body: bytes, url: str, reason: str
) -> None:
    """Each kind of bad delivery raises InvalidSignature with its own reason."""
    if isinstance(signature, tuple):
        key, signed_url = signature
        signature = sign(key, url=signed_url, body=BODY)
    with pytest.raises(InvalidSignature) as caught:
        verifier.verify(signature, body, url)
    assert reason in caught.value.detail
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("skew_s", "ok", "reason"),
    [
        (-303, True, ""),  # expired 3 s ago: within tolerance
        (-310, False, "expired"),
        (3, True, ""),  # issued 3 s in the verifier's future
        (10, False, "not yet valid"),
    ],
)
def test_clock_skew(verifier: Verifier, skew_s: int, ok: bool, reason: str) -> None:
    """A few seconds of clock skew pass; more is rejected as expired or not yet valid."""
    signature = sign(DEV_CURRENT_SIGNING_KEY, url=URL, body=BODY, now=time.time() + skew_s)
    if ok:
        verifier.verify(signature, BODY, URL)
        return
    with pytest.raises(InvalidSignature, match=reason):
        verifier.verify(signature, BODY, URL)


def test_wrong_issuer(verifier: Verifier) -> None:
    """A token not issued by Upstash is rejected even with the right key."""
    now = int(time.time())
    claims = {"iss": "Someone", "sub": URL, "iat": now, "nbf": now, "exp": now + 60, "body": ""}
    token = jwt.encode(claims, DEV_CURRENT_SIGNING_KEY, algorithm="HS256")
    with pytest.raises(InvalidSignature, match="wrong issuer"):
        verifier.verify(token, BODY, URL)


def test_signature_claims_match_the_wire_facts() -> None:
    """The local server's JWT: HS256, iss Upstash, sub URL, exp = iat + 300, iat/nbf not future."""
    before = time.time()
    token = sign(DEV_CURRENT_SIGNING_KEY, url=URL, body=BODY)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, DEV_CURRENT_SIGNING_KEY, algorithms=["HS256"], issuer="Upstash")
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims["sub"] == URL
    assert claims["exp"] == claims["iat"] + 300
    assert claims["iat"] == claims["nbf"] <= before
    assert claims["jti"]
    assert "=" not in claims["body"]
