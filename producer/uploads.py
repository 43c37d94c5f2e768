"""Uploads: `POST /api/upload/resume`, `/api/upload/detailed-resume`, `/api/upload/jd`.

Each takes JSON `{"text": "…", "lang": "en|zh"}` (the job description `{"image": "data:…"}`
too) or a multipart form with a `file` and an optional `lang`. The file is typed by its
content and read by `lib.assets.files` (in a worker thread: a PDF costs 0.1-0.5 s of CPU),
the language checked by `lib.assets.language`, and the asset stored with its owner.
Answers 201 with the asset's id, its language and its length in characters.

Errors answer in the caller's language (`?lang=`, cookie, `Accept-Language`), not in the
document's: the `lang` field says what the document is written in.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from lib.assets import files, language
from lib.assets.files import Extracted, Kind
from lib.assets.store import AssetStore, NewAsset
from lib.errors import BadImage, ImageTooLarge, InvalidRequest, UnsupportedFile
from lib.http.errors import request_lang
from lib.http.json_body import read_json
from lib.i18n import Lang, normalize_lang
from lib.settings import Settings
from lib.templates.variables import check_image
from lib.users.owner import Owner
from producer.identity import identity

logger = logging.getLogger(__name__)

# Multipart: one file and a few small fields (`lang`); a field's value is at most this.
MAX_FORM_FIELDS = 4
MAX_FIELD_BYTES = 1024
ID_FIELDS: dict[Kind, str] = {
    "resume": "resume_id",
    "detailed_resume": "detailed_resume_id",
    "jd": "job_id",
}
READ_PATHS: dict[Kind, str] = {
    "resume": "/api/resumes/",
    "detailed_resume": "/api/detailed-resumes/",
    "jd": "/api/jobs/",
}


class UploadBody(BaseModel):
    """The JSON form of an upload: a text, or (job descriptions) a screenshot's data URL."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    image: str | None = None
    lang: str | None = None


def _declared(value: str | None) -> Lang | None:
    """The declared language (`en`, `zh`, or a tag like `zh-CN`); None when not given.

    Raises:
        InvalidRequest: any other value.
    """
    if value is None or not value.strip():
        return None
    lang = normalize_lang(value)
    if lang is None:
        raise InvalidRequest(f"lang {value!r}", reason="upload_lang")
    return lang


async def _read_form(request: Request) -> tuple[bytes, str | None]:
    """The uploaded file's bytes and the `lang` field of a multipart body.

    Raises:
        InvalidRequest: an unreadable form, or one without a `file` part.
        PayloadTooLarge: the body passed the upload limit (`lib.http.body_limit`).
    """
    try:
        form = await request.form(
            max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES
        )
    except HTTPException as exc:  # starlette answers a bad form with a 400 of its own
        raise InvalidRequest(str(exc.detail), reason="bad_multipart") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("no file part", reason="upload_body")
        lang = form.get("lang")
        data = await upload.read()
    finally:
        await form.close()
    return data, lang if isinstance(lang, str) else None


def _image_bytes(data_url: str, settings: Settings) -> bytes:
    """A screenshot sent as a data URL, decoded and checked (`lib.templates.variables`).

    Raises:
        BadImage: 415, not a PNG/JPEG/WebP/GIF data URL, or undecodable.
        ImageTooLarge: 413, over the upload image limit.
    """
    try:
        return check_image(data_url, settings.upload_max_image_bytes)
    except PydanticCustomError as exc:
        if exc.type == "image_too_large":
            raise ImageTooLarge(exc.message(), max_bytes=settings.upload_max_image_bytes) from None
        raise BadImage(exc.message()) from None


def _read_file(
    data: bytes, kind: Kind, declared: Lang | None, fallback: Lang, settings: Settings
) -> NewAsset:
    """CPU-bound: type, extract and language-check an uploaded file."""
    return _asset(files.extract(data, kind=kind, settings=settings), declared, fallback)


def _read_text(text: str, kind: Kind, declared: Lang | None, settings: Settings) -> NewAsset:
    """CPU-bound: normalize, limit and language-check pasted text."""
    return _asset(files.from_text(text, kind=kind, settings=settings), declared, "en")


def _asset(extracted: Extracted, declared: Lang | None, fallback: Lang) -> NewAsset:
    """The asset to store; a screenshot's language is the declared one, else `fallback`
    (the caller's): the producer does not read images (no OCR on a cold start)."""
    if extracted.image is not None:
        return NewAsset(
            kind=extracted.kind,
            lang=declared or fallback,
            source="image",
            image=extracted.image,
            image_mime=extracted.mime,
        )
    lang = language.check(declared, extracted.text)
    return NewAsset(kind=extracted.kind, lang=lang, source=extracted.file_type, text=extracted.text)


async def _body_asset(request: Request, kind: Kind, settings: Settings, ui_lang: Lang) -> NewAsset:
    """Read the request (multipart or JSON) into a checked asset."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        data, lang_field = await _read_form(request)
        declared = _declared(lang_field)
        return await anyio.to_thread.run_sync(
            functools.partial(_read_file, data, kind, declared, ui_lang, settings)
        )
    raw = await read_json(request)
    try:
        body = UploadBody.model_validate(raw)
    except ValidationError:
        raise InvalidRequest("not an upload body", reason="upload_body") from None
    declared = _declared(body.lang)
    if body.image is not None and body.text is None:
        if kind != "jd":
            raise UnsupportedFile(f"an image for a {kind}", reason="image_not_jd")
        image = await anyio.to_thread.run_sync(_image_bytes, body.image, settings)
        return await anyio.to_thread.run_sync(
            functools.partial(_read_file, image, kind, declared, ui_lang, settings)
        )
    if body.text is None or body.image is not None:
        raise InvalidRequest("give text or image", reason="upload_body")
    return await anyio.to_thread.run_sync(
        functools.partial(_read_text, body.text, kind, declared, settings)
    )


async def _upload(request: Request, kind: Kind) -> JSONResponse:
    settings: Settings = request.app.state.settings
    assets = AssetStore(request.app.state.pg)
    ident = identity(request)
    ui_lang = request_lang(request)
    asset = await _body_asset(request, kind, settings, ui_lang)
    stored = await assets.put(Owner(ident.user_id, ident.kind, ui_lang), asset)
    url = READ_PATHS[kind] + stored.id
    body: dict[str, Any] = {
        ID_FIELDS[kind]: stored.id,
        "kind": kind,
        "lang": stored.lang,
        "chars": stored.chars,
        "source": stored.source,
        "url": url,
    }
    logger.info("upload %s %s: %s, %d chars", kind, stored.id, stored.source, stored.chars)
    return JSONResponse(body, status_code=201, headers={"Location": url})


async def upload_resume(request: Request) -> JSONResponse:
    """`POST /api/upload/resume` → 201 `{"resume_id", "lang", "chars", …}`."""
    return await _upload(request, "resume")


async def upload_detailed_resume(request: Request) -> JSONResponse:
    """`POST /api/upload/detailed-resume` → 201 `{"detailed_resume_id", "lang", "chars", …}`."""
    return await _upload(request, "detailed_resume")


async def upload_jd(request: Request) -> JSONResponse:
    """`POST /api/upload/jd` → 201 `{"job_id", "lang", "chars", …}` (text or screenshot)."""
    return await _upload(request, "jd")
