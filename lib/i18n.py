"""User-facing messages in English and Chinese, and the caller's language choice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")

MESSAGES: dict[str, dict[Lang, str]] = {
    "rate_limited": {
        "en": "Too many requests. Try again in {retry_after} seconds.",
        "zh": "请求过于频繁，请在 {retry_after} 秒后重试。",
    },
    "queue_full": {
        "en": "The queue is full right now. Try again in {retry_after} seconds.",
        "zh": "当前队列已满，请在 {retry_after} 秒后重试。",
    },
    "slot_busy": {
        "en": "No model slot is free yet. Retrying in {retry_after} seconds.",
        "zh": "暂无空闲的模型槽位，将在 {retry_after} 秒后重试。",
    },
    "task_already_running": {
        "en": "A task of this kind is already running for you.",
        "zh": "您已有一个同类任务正在运行。",
    },
    "task_not_cancellable": {
        "en": "This task has already started or finished and can no longer be cancelled.",
        "zh": "该任务已开始或已结束，无法取消。",
    },
    "not_found": {"en": "Not found.", "zh": "未找到。"},
    "unauthorized": {"en": "Authentication failed.", "zh": "身份验证失败。"},
    "invalid_signature": {"en": "Invalid request signature.", "zh": "请求签名无效。"},
    "invalid_request": {"en": "Invalid request: {detail}", "zh": "请求无效：{detail}"},
    "unknown_template": {
        "en": "Unknown task template: {template}.",
        "zh": "未知的任务模板：{template}。",
    },
    "missing_variables": {
        "en": "Missing or invalid variables: {fields}.",
        "zh": "缺少或无效的变量：{fields}。",
    },
    "priority_not_allowed": {
        "en": "You may set a priority of at most {max_priority} for this task.",
        "zh": "此任务的优先级最高只能设为 {max_priority}。",
    },
    "bad_image": {
        "en": "The image must be a PNG, JPEG, WebP or GIF data URL.",
        "zh": "图片必须是 PNG、JPEG、WebP 或 GIF 格式的 data URL。",
    },
    "image_too_large": {
        "en": "The image is larger than {max_bytes} bytes.",
        "zh": "图片超过 {max_bytes} 字节。",
    },
    "payload_too_large": {
        "en": "The request body is larger than {max_bytes} bytes.",
        "zh": "请求体超过 {max_bytes} 字节。",
    },
    "publish_failed": {
        "en": "The task could not be queued. Nothing was charged; please retry.",
        "zh": "任务未能加入队列，未产生任何扣费，请重试。",
    },
    "service_unavailable": {
        "en": "The service is temporarily unavailable.",
        "zh": "服务暂时不可用。",
    },
    "llm_error": {
        "en": "The model call failed. Any charge has been refunded.",
        "zh": "模型调用失败，费用已退还。",
    },
    "output_invalid": {
        "en": "The model's answer was not in the expected format. Any charge has been refunded.",
        "zh": "模型的回答格式不符合要求，费用已退还。",
    },
    "cancelled": {"en": "The task was cancelled.", "zh": "任务已取消。"},
    "timeout": {
        "en": "The task took too long and was stopped. Any charge has been refunded.",
        "zh": "任务超时已停止，费用已退还。",
    },
    "delivery_failed": {
        "en": "The task could not be delivered to a worker. Any charge has been refunded.",
        "zh": "任务未能送达处理节点，费用已退还。",
    },
    "config_error": {"en": "Server configuration error.", "zh": "服务器配置错误。"},
    "internal_error": {"en": "Internal error.", "zh": "内部错误。"},
}

# The `{detail}` of a message, localized, for errors raised with a `reason` param (e.g.
# `InvalidRequest("...", reason="not_json")`). Without one, `detail` is the English text
# the error was raised with.
DETAILS: dict[str, dict[Lang, str]] = {
    "not_json": {"en": "the body is not valid JSON.", "zh": "请求体不是有效的 JSON。"},
    "too_deep": {"en": "the body is nested too deeply.", "zh": "请求体的嵌套层级过深。"},
    "event_id": {
        "en": "the event id must be a stream id (ms-seq, each part at most 2^64-1).",
        "zh": "事件编号必须是流编号（毫秒-序号，每部分不超过 2^64-1）。",
    },
}


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def message(code: str, lang: str, params: Mapping[str, Any] | None = None) -> str:
    """The user-facing text for an error code in `lang` (English when unknown)."""
    entry = MESSAGES.get(code) or MESSAGES["internal_error"]
    chosen = normalize_lang(lang) or "en"
    values = _Blank(params or {})
    detail = DETAILS.get(str(values.get("reason", "")))
    if detail is not None:
        values["detail"] = detail[chosen].format_map(values)
    return entry.get(chosen, entry["en"]).format_map(values)


def normalize_lang(value: str | None) -> Lang | None:
    """`zh-CN`, `zh_TW`, `ZH` → `zh`; `en-US` → `en`; anything else → None."""
    if not value:
        return None
    head = value.strip().lower().replace("_", "-").split("-")[0]
    return head if head in LANGS else None


def from_accept_language(header: str | None) -> Lang | None:
    """The first supported language of an `Accept-Language` header, by q-value."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        tag, _, rest = part.strip().partition(";")
        q = 1.0
        if rest.strip().startswith("q="):
            try:
                q = float(rest.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, index, tag))
    for neg_q, _, tag in sorted(ranked):
        lang = normalize_lang(tag)
        if lang and neg_q < 0:
            return lang
    return None


def choose_lang(explicit: str | None, cookie: str | None, accept_language: str | None) -> Lang:
    """Explicit `lang` → cookie `lang` → `Accept-Language` → `en`."""
    return (
        normalize_lang(explicit)
        or normalize_lang(cookie)
        or from_accept_language(accept_language)
        or "en"
    )
