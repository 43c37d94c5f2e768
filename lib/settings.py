"""One settings object, read once from the environment (and `.env`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Upstash's own local-development credentials (public, documented defaults).
DEV_QSTASH_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_CURRENT_SIGNING_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_NEXT_SIGNING_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"

RedisMode = Literal["tcp", "rest", "embedded"]
# Room for a multipart body's boundaries, part headers and small fields around the file.
UPLOAD_ENVELOPE_BYTES = 64 * 1024


DEFAULT_PRICES: dict[str, dict[str, float | str]] = {
    # Per million tokens. DeepSeek and Zhipu public list prices, CNY.
    "deepseek-chat": {"input": 2.0, "output": 8.0, "currency": "CNY"},
    "deepseek-reasoner": {"input": 4.0, "output": 16.0, "currency": "CNY"},
    "glm-4.5": {"input": 2.0, "output": 8.0, "currency": "CNY"},
    "glm-4.5-flash": {"input": 0.0, "output": 0.0, "currency": "CNY"},
    "glm-4.1v-thinking-flash": {"input": 0.0, "output": 0.0, "currency": "CNY"},
}


class Settings(BaseSettings):
    """Every setting slotline reads; names are the environment variables."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Redis: TCP wins over REST; neither means an embedded Valkey (local stack).
    redis_url: str | None = None
    # TCP, per process: two pools (commands; blocking reads, where a live SSE reader holds
    # a connection while it blocks) of up to this many connections each.
    redis_max_connections: int = 256
    redis_pool_timeout_s: float = 5.0
    # A command's reply deadline (TCP socket timeout, REST request timeout): a Redis that
    # hangs answers 503 after it. A blocking XREAD (SSE, long-poll) gets its block time on
    # top, on a pool of its own, so quiet gaps of any length keep their stream.
    redis_socket_timeout_s: float = 3.0
    redis_connect_timeout_s: float = 2.0
    # REST: extra tries after a failed request (the SDK retries timeouts too).
    redis_rest_retries: int = 1
    upstash_redis_rest_url: str | None = None
    upstash_redis_rest_token: SecretStr | None = None

    # Push queue.
    qstash_url: str | None = None
    qstash_token: SecretStr | None = None
    # The whole publish call, its transport retries included: past it the submit answers 503
    # and is undone.
    qstash_publish_timeout_s: float = 5.0
    qstash_current_signing_key: SecretStr | None = None
    qstash_next_signing_key: SecretStr | None = None
    # Delivery retries of each task message (`Upstash-Retries`; hosted QStash caps it per
    # plan). A crash costs 2 (the broken delivery, then one wait for the dead lease), a
    # Redis outage of up to a lease about 2 more; docs/decisions.md, "Retry budget".
    qstash_retries: int = 5
    # The delay before each retry (`Upstash-Retry-Delay`, ms, over `retried` from 0) when
    # the worker gave no `Retry-After` (it was unreachable: a crash, a deploy). QStash's
    # own schedule is 12 s, then 2 m 28 s: a message refused twice by an app that was down
    # a little longer than 12 s would wait minutes with slots free. This one: 10, 20, 40,
    # 80, 160 s (5 min 10 s in all, then the failure callback reissues the ticket).
    qstash_retry_delay: str = "min(900000, 10000 * pow(2, retried))"
    # A dead-lettered message is replaced by a new one (the failure callback) this many
    # times while its queue still has work, before the tasks it served are failed.
    ticket_reissues: int = 2
    # Local QStash server: retry delays are multiplied by this (tests use ~0.001).
    qstash_time_scale: float = 1.0

    # The public base URL QStash delivers to (and signs as the JWT `sub`).
    app_base_url: str | None = None
    app_secret: SecretStr | None = None

    # Database.
    database_url: SecretStr | None = None
    # Connections of the request handlers (`lib/db/pg.py`). A long-lived process keeps a small
    # pool of up to this many; 0 = no pool, one connection per operation, opened and closed
    # with it (a serverless invocation: a frozen instance must not hold connections). None
    # = 0 on Vercel or Lambda (their `VERCEL` / `AWS_LAMBDA_FUNCTION_NAME`), else 4.
    database_pool_max: int | None = None
    # Waiting for a pooled connection (or connecting): past it the request answers 503.
    database_timeout_s: float = 5.0
    # Set by the serverless platforms themselves (read to choose the connection policy).
    vercel: str | None = None
    aws_lambda_function_name: str | None = None

    # LLM providers.
    deepseek_api_key: SecretStr | None = None
    deepseek_base_url: str = "https://api.deepseek.com/v1"
    zhipuai_api_key: SecretStr | None = None
    zhipuai_base_url: str = "https://open.bigmodel.cn/api/paas/v4"
    # Any OpenAI-compatible server (self-hosted); when set it serves every model.
    openai_compat_base_url: str | None = None
    openai_compat_api_key: SecretStr | None = None
    llm_timeout_s: float = 60.0
    # Same-model retries after an invalid output or a transient provider error, and the
    # first backoff delay (doubled each retry).
    llm_retries: int = 2
    llm_backoff_s: float = 0.5
    prices: dict[str, dict[str, float | str]] = Field(default_factory=lambda: dict(DEFAULT_PRICES))

    # Offline model server (used when no provider key is set).
    offline_model_url: str | None = None
    offline_ttft_ms: float = 0.0
    offline_tokens_per_s: float = 0.0  # 0 = as fast as possible

    # Slot pools (model-level concurrency).
    deepseek_max_workers: int = 5
    glm_max_workers: int = 3
    glm_flash_max_workers: int = 2
    glm_vision_max_workers: int = 5

    # Backpressure: most tasks waiting or running per queue.
    queue_max_pending: int = 100
    queue_retry_after_s: int = 5

    # Rate limits (per user, per window).
    rate_window_s: int = 300
    rate_trial_limit: int = 3
    rate_user_limit: int = 15
    # Trial callers are limited per client address too ("by userKey or IP"): dropping the
    # cookie does not reset the window. The address comes from the socket, or from
    # X-Forwarded-For only behind TRUSTED_PROXIES proxies (Vercel, API Gateway: 1).
    rate_trial_address_limit: int = 3
    trusted_proxies: int = 0

    # Quota: cost units debited per paid task; new signed-in users start at 0.
    paid_task_cost: int = 1
    trial_balance: int = 0

    # Request body limits, one per endpoint kind (`lib/http/body_limit.py` maps paths to kinds),
    # checked on Content-Length and while the body streams, before anything parses it.
    # tasks: a 4 MiB image is 5.6 MB of base64, plus the texts. A delivery carries the
    # submitted variables plus an envelope, so keep `worker` above `tasks`; the failure
    # callback carries the delivery's body in base64 (4/3 of it), so keep `callback` above
    # 4/3 of `worker`.
    body_limit_default_bytes: int = 64 * 1024
    body_limit_tasks_bytes: int = 8 * 1024 * 1024
    body_limit_worker_bytes: int = 10 * 1024 * 1024
    body_limit_callback_bytes: int = 16 * 1024 * 1024
    # The upload routes (`/api/upload/…`): a file of UPLOAD_MAX_BYTES in a multipart body,
    # or a JSON body with a screenshot's data URL. None = UPLOAD_MAX_BYTES + 64 KiB (the
    # multipart envelope and fields; a 4 MiB image as base64 is 5.6 MB, below it).
    body_limit_upload_bytes: int | None = None

    # Uploads (`lib/assets/files.py`): résumés, detailed résumés and job descriptions as
    # PDF, DOCX or UTF-8 text; a job description also as a PNG/JPEG/WebP screenshot. The
    # type is judged by content. A screenshot goes to the vision route as it is, so its
    # limit is the one the vision task accepts (lib/templates/variables.py MAX_IMAGE_BYTES).
    upload_max_bytes: int = 10 * 1024 * 1024
    upload_max_image_bytes: int = 4 * 1024 * 1024
    upload_max_pdf_pages: int = 20
    # Bomb guards. A DOCX is a zip: its parts together, uncompressed, and each XML part
    # (parsed into a tree), uncompressed. A PDF: each stream, decompressed (pypdf's own
    # limit, 75 MB by default, lowered), and the wall time of reading one file's text (a
    # real two-page résumé takes 0.2-0.5 s; docs/decisions.md, "Uploads").
    upload_max_unzipped_bytes: int = 64 * 1024 * 1024
    upload_max_docx_xml_bytes: int = 16 * 1024 * 1024
    upload_max_pdf_stream_bytes: int = 16 * 1024 * 1024
    upload_pdf_max_seconds: float = 10.0
    # Characters of text per kind, after normalization; the most match what the task
    # templates take (lib/templates/variables.py MAX_RESUME_CHARS, ...), the least refuse a text
    # that is too thin to summarize (`text_too_short`; 520 characters is a whole résumé in
    # Chinese, examples/resume.zh.txt).
    upload_max_chars_resume: int = 30_000
    upload_max_chars_detailed_resume: int = 60_000
    upload_max_chars_jd: int = 20_000
    text_min_chars_resume: int = 150
    text_min_chars_detailed_resume: int = 300
    text_min_chars_jd: int = 80

    # Start order is priority, then FIFO. The server's priority per template (0 when not
    # listed, e.g. {"job_summary": 2}); signed-in callers may ask for less, never more;
    # trial callers always get 0 (docs/decisions.md, "Priority").
    template_priority: dict[str, int] = Field(default_factory=dict)

    # Services: what each depth costs a paid service (units, debited once per service), and
    # how many a user may have created or running at once.
    service_costs: dict[str, int] = Field(default_factory=lambda: {"a": 1, "b": 2, "c": 3})
    service_max_pending: int = 3

    # Safety net: a user lock expires even if its task is never finished.
    user_lock_ttl_s: int = 7200

    # Worker.
    # Build the LLM runner (and import LangChain) at start-up instead of on the first task:
    # right for long-lived processes (`slotline dev`), wrong for serverless cold starts.
    worker_preload_llm: bool = False
    lease_ms: int = 30_000
    start_retry_after_s: int = 2
    # Retry-After when the worker cannot reach Redis: a few of these span a lease.
    redis_blip_retry_s: int = 10
    worker_time_limit_s: float = 280.0
    token_flush_ms: int = 50
    # A size cap for bursts only (a fast model, a cached answer): at normal speeds the
    # 50 ms window flushes first. Each flush is one billed XADD.
    token_flush_max: int = 512

    # Events.
    sse_max_seconds: float = 25.0
    sse_heartbeat_s: float = 10.0
    # How often a reader of a queued task looks up its position (one ZRANK each, only
    # while it waits) and sends it when it changed.
    sse_position_refresh_s: float = 2.0
    sse_retry_ms: int = 1000
    # While tokens stream, a live SSE reader reads at most once per this interval. Longer
    # than the token flush window, so a read usually takes more than one batch (each read
    # is a billed command); the first token is never held back. ~13 updates a second.
    sse_min_read_interval_ms: int = 75
    longpoll_max_wait_s: float = 20.0
    events_ttl_s: int = 86_400
    task_ttl_s: int = 7 * 86_400
    idem_ttl_s: int = 600

    # Web pages. Operators (signed-in user ids, `OPERATORS=alice,bob`) see the queue
    # dashboard; for everyone else it and its data routes do not exist (404).
    operators: Annotated[frozenset[str], NoDecode] = frozenset()
    # The dashboard's polling intervals (ms): queues and slot pools (one Redis pipeline a
    # poll, at most every 2 s), and dead letters and failures (one QStash call, one query).
    dashboard_poll_ms: int = Field(default=2000, ge=250, le=2000)
    dashboard_failures_poll_ms: int = Field(default=10_000, ge=1000)
    # A sign-in session (the bearer token kept in an HttpOnly cookie) lasts at most as long
    # as its token, and never longer than this.
    session_max_age_s: int = 7 * 86_400

    # Local stack.
    state_dir: Path = Path(".slotline")
    # Local QStash server: a delivery attempt's lease, renewed while it runs; the leases
    # of a server killed mid-delivery run out within it and their messages go out again.
    qstash_local_lease_s: float = 15.0

    @field_validator("operators", mode="before")
    @classmethod
    def _split_operators(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    def serverless(self) -> bool:
        """Running as a serverless function (Vercel, AWS Lambda)."""
        return bool(self.vercel or self.aws_lambda_function_name)

    def pool_max(self) -> int:
        """Most pooled Postgres connections of the request handlers (0: no pool)."""
        if self.database_pool_max is not None:
            return max(self.database_pool_max, 0)
        return 0 if self.serverless() else 4

    def upload_body_limit(self) -> int:
        """The body limit of the upload routes, in bytes."""
        if self.body_limit_upload_bytes is not None:
            return self.body_limit_upload_bytes
        return self.upload_max_bytes + UPLOAD_ENVELOPE_BYTES

    def redis_mode(self) -> RedisMode:
        """Which Redis adapter the settings select."""
        if self.redis_url:
            return "tcp"
        if self.upstash_redis_rest_url:
            return "rest"
        return "embedded"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def secret(value: SecretStr | None) -> str | None:
    """The plain value of an optional secret."""
    return value.get_secret_value() if value is not None else None
