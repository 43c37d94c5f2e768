"""The `Upstash-Signature` JWT: HS256 over the destination URL and the body's SHA-256."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time

import jwt

SIGNATURE_TTL_S = 300


def body_hash(body: bytes) -> str:
    """base64url(sha256(body)) without padding, as the `body` claim carries it."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")


def sign(key: str, *, url: str, body: bytes, now: float | None = None) -> str:
    """A signature for one delivery, made with `key` (the `sig_…` string itself).

    `iat` and `nbf` are the current second rounded down, so they never lie in the
    verifier's future when both clocks agree.
    """
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": "Upstash",
        "sub": url,
        "iat": issued,
        "nbf": issued,
        "exp": issued + SIGNATURE_TTL_S,
        "jti": f"jwt_{secrets.token_hex(12)}",
        "body": body_hash(body),
    }
    return jwt.encode(claims, key, algorithm="HS256", headers={"typ": "JWT"})
