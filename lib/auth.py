"""Identity: HS256 bearer tokens for signed-in users and the signed trial cookie."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jwt

from lib.errors import Unauthorized
from lib.settings import Settings, secret

logger = logging.getLogger(__name__)

IdentityKind = Literal["trial", "user"]

TRIAL_COOKIE = "slotline_trial"
TRIAL_PREFIX = "trial-"
TRIAL_COOKIE_MAX_AGE_S = 365 * 86_400
ALGORITHM = "HS256"
SECRET_FILE = "app_secret"

# User ids end up inside Redis key names (`cs:events:{user}:…`): no `:` or spaces.
_USER_ID = re.compile(r"^[A-Za-z0-9_.@+-]{1,128}$")
_TRIAL_ID = re.compile(r"^trial-[A-Za-z0-9_-]{16,64}$")


@dataclass(frozen=True)
class Identity:
    """Who is calling: a signed-in user (bearer token) or a trial visitor (cookie)."""

    user_id: str
    kind: IdentityKind


def valid_user_id(user_id: str) -> bool:
    """A signed-in user id: key-safe and never in the trial id space."""
    return bool(_USER_ID.match(user_id)) and not user_id.startswith(TRIAL_PREFIX)


def issue_token(app_secret: str, user_id: str, ttl_s: int, *, now: float | None = None) -> str:
    """A bearer token for `user_id`, valid for `ttl_s` seconds.

    Raises:
        ValueError: the user id is not key-safe or lies in the trial id space.
    """
    if not valid_user_id(user_id):
        raise ValueError(f"invalid user id {user_id!r}")
    issued = int(now if now is not None else time.time())
    claims = {"sub": user_id, "iat": issued, "exp": issued + ttl_s}
    return jwt.encode(claims, app_secret, algorithm=ALGORITHM)


def verify_token(app_secret: str, token: str, *, leeway_s: float = 5.0) -> str:
    """The user id of a valid bearer token.

    Raises:
        Unauthorized: bad signature, expired, no `exp`/`sub`, or an invalid user id.
    """
    try:
        claims = jwt.decode(
            token,
            app_secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"]},
            leeway=leeway_s,
        )
    except jwt.PyJWTError as exc:
        # The reason is safe to log; the token itself is not.
        logger.info("bearer token rejected: %s", type(exc).__name__)
        raise Unauthorized("invalid token") from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not valid_user_id(sub):
        raise Unauthorized("invalid token subject")
    return sub


def bearer_of(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is its scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def new_trial_id() -> str:
    """A fresh, unguessable trial user id (prefixed: never collides with signed-in ids)."""
    return TRIAL_PREFIX + secrets.token_urlsafe(16)


def _trial_sig(app_secret: str, trial_id: str) -> str:
    mac = hmac.new(app_secret.encode(), b"trial:" + trial_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign_trial(app_secret: str, trial_id: str) -> str:
    """The cookie value `<id>.<sig>` for a trial id."""
    return f"{trial_id}.{_trial_sig(app_secret, trial_id)}"


def verify_trial(app_secret: str, cookie: str | None) -> str | None:
    """The trial id of a correctly signed cookie value, else None."""
    if not cookie:
        return None
    trial_id, dot, sig = cookie.rpartition(".")
    if not dot or not _TRIAL_ID.match(trial_id):
        return None
    if not hmac.compare_digest(sig, _trial_sig(app_secret, trial_id)):
        return None
    return trial_id


def resolve_identity(
    app_secret: str, authorization: str | None, trial_cookie: str | None
) -> tuple[Identity, str | None]:
    """Who is calling, and a new trial cookie value to set (None when none is needed).

    A bearer token wins; an invalid one is an error, never a silent fall back to trial.

    Raises:
        Unauthorized: an `Authorization: Bearer` header with an invalid token.
    """
    token = bearer_of(authorization)
    if token is not None:
        return Identity(verify_token(app_secret, token), "user"), None
    trial_id = verify_trial(app_secret, trial_cookie)
    if trial_id is not None:
        return Identity(trial_id, "trial"), None
    trial_id = new_trial_id()
    return Identity(trial_id, "trial"), sign_trial(app_secret, trial_id)


def app_secret(settings: Settings) -> str:
    """`APP_SECRET`, or the local stack's generated one kept in `state_dir` (created once).

    Raises:
        OSError: the state folder cannot be written.
    """
    configured = secret(settings.app_secret)
    if configured:
        return configured
    path = Path(settings.state_dir) / SECRET_FILE
    if path.exists():
        return _read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its secret
        return _read_secret(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    logger.info("generated a local app secret in %s", path)
    return value


def _read_secret(path: Path) -> str:
    # A process that just created the file may not have written it yet.
    for _ in range(100):
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
        time.sleep(0.01)
    raise OSError(f"{path} is empty")
