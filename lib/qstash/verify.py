"""QStash signature check: the official `Receiver` first, then a diagnosis that names the reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from typing import Any, NoReturn

import jwt
from qstash import Receiver
from qstash.errors import SignatureError

from lib.errors import ConfigError, InvalidSignature
from lib.settings import Settings, secret

logger = logging.getLogger(__name__)


class Verifier:
    """Checks `Upstash-Signature` against the current and next signing keys.

    The official `Receiver` reports every failure as the next key's error and
    ignores its clock tolerance, so when it rejects a signature we decode the
    token ourselves (PyJWT with `leeway`), accept it if only the clock was a few
    seconds off, and otherwise log and raise the real reason. Keys are never logged.
    """

    def __init__(self, current_key: str, next_key: str, *, tolerance_s: int = 5) -> None:
        self._keys = (current_key, next_key)
        self._receiver = Receiver(current_key, next_key)
        self.tolerance_s = tolerance_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Verifier:
        """A verifier with the configured signing keys.

        Raises:
            ConfigError: a signing key is missing.
        """
        current = secret(settings.qstash_current_signing_key)
        next_ = secret(settings.qstash_next_signing_key)
        if not current or not next_:
            raise ConfigError("QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY are required")
        return cls(current, next_)

    def verify(self, signature: str | None, body: bytes, url: str) -> None:
        """Accept a delivery or raise.

        Args:
            signature: the `Upstash-Signature` header (None when absent).
            body: the raw request body.
            url: the URL this endpoint is published as (must equal the JWT `sub`).

        Raises:
            InvalidSignature: the detail names the reason.
        """
        if not signature:
            self._reject("missing Upstash-Signature header", url)
        try:
            self._receiver.verify(signature=signature, body=body.decode("utf-8"), url=url)
            return
        except (SignatureError, UnicodeDecodeError):
            pass  # diagnose below: clock skew is tolerated, anything else gets its reason
        except Exception as exc:
            # The SDK lets some bad tokens escape as other errors (a missing `body` claim is
            # a KeyError, a non-string one an AttributeError). Whatever it raised, it did
            # not accept the token: diagnose it like any other rejection.
            logger.info("qstash Receiver raised %s; diagnosing the token", type(exc).__name__)
        reason = self.diagnose(signature, body, url)
        if reason is None:
            logger.info(
                "signature for %s accepted within %d s clock tolerance", url, self.tolerance_s
            )
            return
        self._reject(reason, url)

    def diagnose(self, signature: str, body: bytes, url: str) -> str | None:
        """The reason a signature is invalid (None when it is valid within the tolerance)."""
        reasons: list[str] = []
        for which, key in zip(("current", "next"), self._keys, strict=True):
            claims, reason = self._decode(signature, key)
            if reason == "bad signature":
                reasons.append(f"{reason} ({which} key)")
                continue
            if claims is None:
                return reason
            if claims.get("sub") != url:
                return f"wrong subject: signed for {claims.get('sub')!r}, expected {url!r}"
            # Any JSON value may sit in the claim; a lone surrogate must not break `encode`.
            signed = str(claims.get("body", "")).rstrip("=").encode("utf-8", "replace")
            if not hmac.compare_digest(signed, _body_hash(body).encode()):
                return "body hash mismatch"
            return None
        return "bad signature: neither the current nor the next key matches"

    def _decode(self, signature: str, key: str) -> tuple[dict[str, Any] | None, str]:
        try:
            claims = jwt.decode(
                signature,
                key,
                algorithms=["HS256"],
                issuer="Upstash",
                leeway=self.tolerance_s,
                options={"require": ["iss", "sub", "exp", "nbf", "body"]},
            )
        except jwt.InvalidSignatureError:
            return None, "bad signature"
        except jwt.ExpiredSignatureError:
            return None, "expired"
        except jwt.ImmatureSignatureError:
            return None, "not yet valid (nbf/iat in the future)"
        except jwt.InvalidIssuerError:
            return None, "wrong issuer"
        except jwt.MissingRequiredClaimError as exc:
            return None, f"missing claim {exc.claim!r}"
        except jwt.DecodeError:
            return None, "malformed token"
        except jwt.InvalidTokenError as exc:
            return None, f"invalid token: {type(exc).__name__}"
        return claims, ""

    def _reject(self, reason: str, url: str) -> NoReturn:
        logger.warning("rejected QStash delivery to %s: %s", url, reason)
        raise InvalidSignature(reason)


def _body_hash(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")
