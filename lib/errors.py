"""One error hierarchy: every domain failure carries a stable code and an HTTP status."""

from __future__ import annotations

from typing import Any


class SlotlineError(Exception):
    """Base of every slotline error.

    `code` is stable (clients switch on it), `status` is the HTTP status the
    producer/worker answers with, `params` fill the localized message and
    `headers` go onto the response (e.g. `Retry-After`).
    """

    code = "internal_error"
    status = 500

    def __init__(self, detail: str = "", **params: Any) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        self.params: dict[str, Any] = params

    @property
    def headers(self) -> dict[str, str]:
        return {}


class _RetryAfter(SlotlineError):
    """An error whose response tells the client when to come back."""

    def __init__(self, detail: str = "", *, retry_after: int, **params: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **params)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimited(_RetryAfter):
    code = "rate_limited"
    status = 429


class QueueFull(_RetryAfter):
    code = "queue_full"
    status = 429


class TaskAlreadyRunning(SlotlineError):
    code = "task_already_running"
    status = 409


class TaskNotCancellable(SlotlineError):
    code = "task_not_cancellable"
    status = 409


class AccountBusy(_RetryAfter):
    """`DELETE /api/me` while a task of the caller runs: its worker would write after us."""

    code = "account_busy"
    status = 409


class NotFound(SlotlineError):
    code = "not_found"
    status = 404


class Unauthorized(SlotlineError):
    code = "unauthorized"
    status = 401


class CrossSiteRequest(SlotlineError):
    """A state-changing browser request whose Origin (or Referer) is another site."""

    code = "cross_site_request"
    status = 403


class InvalidSignature(Unauthorized):
    code = "invalid_signature"


class InvalidRequest(SlotlineError):
    code = "invalid_request"
    status = 422


class UnknownTemplate(InvalidRequest):
    code = "unknown_template"


class MissingVariables(InvalidRequest):
    code = "missing_variables"


class UnsupportedLanguage(InvalidRequest):
    """A `lang` asked for explicitly (a request body's) that we do not speak (`supported`)."""

    code = "unsupported_language"


class PriorityNotAllowed(InvalidRequest):
    """A caller asked for a higher priority than it may set (`max_priority`)."""

    code = "priority_not_allowed"


class BadImage(SlotlineError):
    code = "bad_image"
    status = 415


class ImageTooLarge(SlotlineError):
    code = "image_too_large"
    status = 413


class PayloadTooLarge(SlotlineError):
    """The request body passes its endpoint's limit (`max_bytes`); refused before any work.

    The connection is closed after the answer: the rest of the body is never read.
    """

    code = "payload_too_large"
    status = 413

    def __init__(self, detail: str = "", *, max_bytes: int, **params: Any) -> None:
        super().__init__(detail, max_bytes=max_bytes, **params)
        self.max_bytes = max_bytes

    @property
    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class UploadError(SlotlineError):
    """A file or text given as an asset (résumé, detailed résumé, job description) was refused.

    `params["reason"]` picks the localized detail (`errors.detail.*` in `lib/locales/`).
    """

    status = 422


class UnsupportedFile(UploadError):
    """Not a type we read, judged by content (magic bytes), never by name."""

    code = "unsupported_file"
    status = 415


class FileTooLarge(UploadError):
    """Over a limit from settings: bytes, PDF pages or extracted characters."""

    code = "file_too_large"
    status = 413


class FileUnreadable(UploadError):
    """A file of a supported type that cannot be read: corrupt, encrypted, too costly."""

    code = "file_unreadable"


class NoTextInFile(UploadError):
    """A PDF or DOCX without text (a scan, a picture of a page)."""

    code = "no_text_in_file"


class TextTooShort(UploadError):
    code = "text_too_short"


class LanguageMismatch(UploadError):
    """The text is in another language than the one declared."""

    code = "language_mismatch"


class SectionsMissing(SlotlineError):
    """A résumé or job description lacks the sections a service needs (`missing`)."""

    code = "sections_missing"
    status = 422


class TooManyPendingServices(SlotlineError):
    """The caller already has the most services created or running at once."""

    code = "too_many_pending_services"
    status = 429


class PublishFailed(SlotlineError):
    code = "publish_failed"
    status = 503


class ServiceUnavailable(SlotlineError):
    code = "service_unavailable"
    status = 503


class RedisUnavailable(ServiceUnavailable):
    """Redis could not be reached (or no pooled connection freed up in time)."""


class LLMError(SlotlineError):
    """A provider call failed (after retries)."""

    code = "llm_error"
    status = 502


class OutputInvalid(LLMError):
    """The model's output did not validate against the task's schema."""

    code = "output_invalid"


class ConfigError(SlotlineError):
    code = "config_error"
    status = 500
