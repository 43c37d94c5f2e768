"""Build the Redis port the settings select: TCP when REDIS_URL is set, else Upstash REST."""

from __future__ import annotations

from lib.errors import ConfigError
from lib.redis.port import RedisPort
from lib.settings import Settings, secret


def create_redis(settings: Settings) -> RedisPort:
    """A `RedisPort` for the configured Redis; connects lazily.

    Args:
        settings: `REDIS_URL` wins; otherwise `UPSTASH_REDIS_REST_URL` and
            `UPSTASH_REDIS_REST_TOKEN` select the REST adapter.

    Returns:
        The TCP or REST adapter (each imported only when chosen: cold starts).

    Raises:
        ConfigError: no Redis is configured, or the REST URL has no token.
    """
    if settings.redis_url:
        from lib.redis.tcp import TcpRedis

        return TcpRedis.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            pool_timeout_s=settings.redis_pool_timeout_s,
            socket_timeout_s=settings.redis_socket_timeout_s,
            connect_timeout_s=settings.redis_connect_timeout_s,
        )
    if settings.upstash_redis_rest_url:
        token = secret(settings.upstash_redis_rest_token)
        if not token:
            raise ConfigError(
                "UPSTASH_REDIS_REST_URL is set but UPSTASH_REDIS_REST_TOKEN is missing: "
                "the REST adapter cannot authenticate"
            )
        from lib.redis.rest import RestRedis

        return RestRedis(
            settings.upstash_redis_rest_url,
            token,
            timeout_s=settings.redis_socket_timeout_s,
            retries=settings.redis_rest_retries,
        )
    raise ConfigError(
        "no Redis configured: set REDIS_URL (TCP) or UPSTASH_REDIS_REST_URL and "
        "UPSTASH_REDIS_REST_TOKEN (REST); the local stack sets REDIS_URL after "
        "starting its embedded Valkey"
    )
