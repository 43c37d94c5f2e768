"""Settings for a local stack started by a test or a bench."""

from __future__ import annotations

from lib.settings import Settings

# Whatever would switch a part away from the local stack (set in the environment or not).
UNSET = (
    "redis_url",
    "upstash_redis_rest_url",
    "upstash_redis_rest_token",
    "database_url",
    "app_secret",
    "deepseek_api_key",
    "zhipuai_api_key",
    "openai_compat_base_url",
    "offline_model_url",
)


def local_settings() -> Settings:
    """Settings with nothing configured: every part comes from the local stack."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return settings.model_copy(update=dict.fromkeys(UNSET))
