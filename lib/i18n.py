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
    "account_busy": {
        "en": "Some of your tasks are still running. Try again in {retry_after} seconds to "
        "erase your data.",
        "zh": "您仍有任务正在运行，请在 {retry_after} 秒后重试删除数据。",
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
    # Uploads (lib/assets/): the `{detail}` comes from DETAILS by the error's `reason`.
    "unsupported_file": {
        "en": "This file type is not supported: {detail}",
        "zh": "不支持此文件类型：{detail}",
    },
    "file_too_large": {
        "en": "The upload is too large: {detail}",
        "zh": "上传内容过大：{detail}",
    },
    "file_unreadable": {
        "en": "The file could not be read: {detail}",
        "zh": "无法读取该文件：{detail}",
    },
    "no_text_in_file": {
        "en": "No text could be read from this file (it may be a scan or a picture). {detail}",
        "zh": "无法从该文件中读取文字（可能是扫描件或图片）。{detail}",
    },
    "text_too_short": {
        "en": "The text is too short: {chars} characters, at least {min_chars} are needed.",
        "zh": "文本过短：共 {chars} 个字符，至少需要 {min_chars} 个。",
    },
    "language_mismatch": {
        "en": "{detail} Please use one language: upload a version in the language you chose, "
        "or choose the language the text is in.",
        "zh": "{detail}请统一使用一种语言：上传所选语言的版本，或选择与文本一致的语言。",
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
    # uploads: the request itself
    "upload_body": {
        "en": 'send JSON with a "text" (a job description may send an "image" data URL '
        'instead), or a multipart form with a "file".',
        "zh": "请在请求体中提供文本（职位描述也可以改为图片），或通过表单上传文件。",
    },
    "upload_lang": {
        "en": 'the language must be "en" or "zh".',
        "zh": "语言只能是英文或中文。",
    },
    "bad_multipart": {
        "en": "the multipart form could not be read.",
        "zh": "无法解析上传的表单。",
    },
    "asset_limit": {
        "en": "limit must be an integer from 1 to 500.",
        "zh": "数量上限必须是 1 到 500 之间的整数。",
    },
    # unsupported_file
    "types_resume": {
        "en": "upload a PDF, DOCX or plain-text (UTF-8) file.",
        "zh": "请上传 PDF、DOCX 或纯文本（UTF-8 编码）文件。",
    },
    "types_jd": {
        "en": "upload a PDF, DOCX or plain-text (UTF-8) file, or a PNG, JPEG or WebP screenshot.",
        "zh": "请上传 PDF、DOCX 或纯文本（UTF-8 编码）文件，或 PNG、JPEG、WebP 格式的截图。",
    },
    "image_not_jd": {
        "en": "images are accepted for job descriptions only; upload a PDF, DOCX or "
        "plain-text (UTF-8) file.",
        "zh": "仅职位描述可以上传图片，请上传 PDF、DOCX 或纯文本（UTF-8 编码）文件。",
    },
    "legacy_doc": {
        "en": "old Word (.doc) files cannot be read; save it as DOCX or PDF and upload it again.",
        "zh": "无法读取旧版 Word（.doc）文件，请另存为 DOCX 或 PDF 后重新上传。",
    },
    # file_too_large
    "file_bytes": {
        "en": "the file is larger than {max_bytes} bytes.",
        "zh": "文件超过 {max_bytes} 字节。",
    },
    "file_unzipped": {
        "en": "the DOCX unpacks to more than {max_bytes} bytes.",
        "zh": "DOCX 解压后超过 {max_bytes} 字节。",
    },
    "file_pages": {
        "en": "the PDF has more than {max_pages} pages.",
        "zh": "PDF 超过 {max_pages} 页。",
    },
    "file_chars": {
        "en": "the text is longer than {max_chars} characters.",
        "zh": "文本超过 {max_chars} 个字符。",
    },
    # file_unreadable
    "file_encrypted": {
        "en": "it is password-protected. Remove the protection and upload it again, or paste "
        "the text.",
        "zh": "文件受密码保护，请解除保护后重新上传，或直接粘贴文本。",
    },
    "file_corrupt": {
        "en": "it is damaged or not a valid {file_type} file.",
        "zh": "文件已损坏，或不是有效的 {file_type} 文件。",
    },
    "file_too_complex": {
        "en": "its content is too large or too complex to read. Paste the text instead.",
        "zh": "文件内容过大或过于复杂，无法读取，请直接粘贴文本。",
    },
    # no_text_in_file
    "no_text_jd": {
        "en": "A screenshot of the job posting works: upload it as a PNG, JPEG or WebP image.",
        "zh": "可以改为上传职位页面的截图（PNG、JPEG 或 WebP 格式）。",
    },
    "no_text_resume": {
        "en": "Upload a PDF whose text can be selected, or a DOCX file, or paste the text.",
        "zh": "请上传文字可选中的 PDF 或 DOCX 文件，或直接粘贴文本。",
    },
    # language_mismatch
    "lang_detected_zh": {
        "en": "The text is in Chinese, but English was chosen.",
        "zh": "文本是中文，但所选语言是英文。",
    },
    "lang_detected_en": {
        "en": "The text is in English, but Chinese was chosen.",
        "zh": "文本是英文，但所选语言是中文。",
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
