"""Bearer tokens, the signed trial cookie, identity resolution and the local app secret."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from pydantic import SecretStr

from lib.auth import (
    TRIAL_PREFIX,
    Identity,
    app_secret,
    bearer_of,
    issue_token,
    new_trial_id,
    resolve_identity,
    sign_trial,
    verify_token,
    verify_trial,
)
from lib.errors import Unauthorized
from lib.settings import Settings

SECRET = "s3cret-for-tests-" + "0123456789abcdef" * 4


def test_token_round_trip() -> None:
    """A token issued for a user verifies to that user id."""
    assert verify_token(SECRET, issue_token(SECRET, "alice", 60)) == "alice"


def test_token_is_hs256_with_sub_and_exp() -> None:
    """Tokens are HS256 JWTs carrying `sub` = user id and `exp` = issue time + ttl."""
    token = issue_token(SECRET, "bob", 120, now=1_000_000)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "bob"
    assert claims["exp"] == 1_000_120


@pytest.mark.parametrize(
    "token",
    [
        issue_token("another-secret-0123456789abcdef0123456", "alice", 60),
        issue_token(SECRET, "alice", 60, now=time.time() - 3600),
        jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),  # no exp
        jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),  # no sub
        jwt.encode({"sub": "trial-abcdefghijklmnop", "exp": int(time.time()) + 60}, SECRET),
        jwt.encode({"sub": "a:b", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512"),
        "not-a-token",
    ],
    ids=["wrong-secret", "expired", "no-exp", "no-sub", "trial-sub", "colon", "hs512", "junk"],
)
def test_bad_tokens_are_rejected(token: str) -> None:
    """Wrong key, expired, missing claims, trial-space or key-unsafe subjects, other algs fail."""
    with pytest.raises(Unauthorized):
        verify_token(SECRET, token)


@pytest.mark.parametrize("user_id", ["trial-x", "", "has space", "a:b", "x" * 200])
def test_issue_token_refuses_unsafe_ids(user_id: str) -> None:
    """Tokens are never issued for ids in the trial space or that are not key-safe."""
    with pytest.raises(ValueError):
        issue_token(SECRET, user_id, 60)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_of(header: str | None, token: str | None) -> None:
    """Only the Bearer scheme yields a token."""
    assert bearer_of(header) == token


def test_trial_cookie_round_trip() -> None:
    """A signed trial cookie verifies back to its prefixed id."""
    trial_id = new_trial_id()
    assert trial_id.startswith(TRIAL_PREFIX)
    assert verify_trial(SECRET, sign_trial(SECRET, trial_id)) == trial_id


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # signature changed
        lambda v: "trial-" + "z" * 22 + v[v.index(".") :],  # id swapped
        lambda v: sign_trial("other-secret", v.split(".")[0]),  # other key
        lambda v: v.split(".")[0],  # no signature
        lambda v: "",
        lambda v: "alice." + v.split(".")[1],  # not a trial id
    ],
)
def test_tampered_trial_cookies_are_rejected(mutate: object) -> None:
    """A changed id, signature or key makes the cookie worthless."""
    value = sign_trial(SECRET, new_trial_id())
    assert callable(mutate)
    assert verify_trial(SECRET, mutate(value)) is None


def test_resolve_prefers_bearer() -> None:
    """A valid bearer token makes a signed-in user, whatever the cookie, and sets no cookie."""
    cookie = sign_trial(SECRET, new_trial_id())
    token = issue_token(SECRET, "alice", 60)
    assert resolve_identity(SECRET, f"Bearer {token}", cookie) == (Identity("alice", "user"), None)


def test_resolve_invalid_bearer_is_an_error() -> None:
    """An invalid bearer token never falls back to a trial identity."""
    with pytest.raises(Unauthorized):
        resolve_identity(SECRET, "Bearer nope", None)


def test_resolve_reuses_trial_cookie() -> None:
    """A valid trial cookie is the identity; nothing new is set."""
    trial_id = new_trial_id()
    ident, new = resolve_identity(SECRET, None, sign_trial(SECRET, trial_id))
    assert (ident, new) == (Identity(trial_id, "trial"), None)


def test_resolve_mints_trial_cookie() -> None:
    """No token and no valid cookie: a new trial id and its signed cookie value."""
    ident, new = resolve_identity(SECRET, None, "forged.value")
    assert ident.kind == "trial" and ident.user_id.startswith(TRIAL_PREFIX)
    assert new is not None and verify_trial(SECRET, new) == ident.user_id


def test_app_secret_prefers_setting(tmp_path: Path) -> None:
    """APP_SECRET wins and no file is written."""
    settings = Settings(app_secret=SecretStr("configured"), state_dir=tmp_path)
    assert app_secret(settings) == "configured"
    assert not (tmp_path / "app_secret").exists()


def test_app_secret_generated_once(tmp_path: Path) -> None:
    """Without APP_SECRET a secret is generated into the state folder (0600) and reused."""
    settings = Settings(app_secret=None, state_dir=tmp_path / "state")
    first = app_secret(settings)
    assert len(first) >= 32
    assert app_secret(settings) == first
    assert (tmp_path / "state" / "app_secret").stat().st_mode & 0o777 == 0o600
