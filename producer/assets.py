"""Owner-only asset reads and deletes: `GET|DELETE /api/resumes/{id}`,
`/api/detailed-resumes/{id}`, `/api/jobs/{id}` (and `/api/jobs/{id}/image`), and
`GET /api/assets`, the caller's assets newest first.

Anyone but the owner gets 404 `not_found`, never 403: an asset's existence is not
revealed. Reads never write (the caller's `users` row is made by their first upload).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lib.assets.files import Kind
from lib.assets.store import MAX_LIST, Asset, AssetStore
from lib.errors import InvalidRequest, NotFound
from producer.identity import identity
from producer.uploads import ID_FIELDS, READ_PATHS

DEFAULT_LIST = 100


def asset_json(asset: Asset) -> dict[str, Any]:
    """The owner's view of an asset."""
    body: dict[str, Any] = {
        ID_FIELDS[asset.kind]: asset.id,
        "kind": asset.kind,
        "lang": asset.lang,
        "text": asset.text,
        "chars": asset.chars,
        "source": asset.source,
        "summary": asset.summary,
        "summary_tokens": asset.summary_tokens,
        "created_at": asset.created_at.isoformat(),
        "updated_at": asset.updated_at.isoformat(),
    }
    if asset.kind == "resume":
        body["active"] = asset.active
        body["structured"] = asset.extra
    if asset.kind == "jd":
        body["parsed"] = asset.extra
        body["has_image"] = asset.has_image
        body["image_url"] = READ_PATHS["jd"] + asset.id + "/image" if asset.has_image else None
    return body


async def _get(request: Request, kind: Kind) -> JSONResponse:
    assets = AssetStore(request.app.state.pg)
    asset = await assets.get(kind, request.path_params["asset_id"], identity(request).user_id)
    return JSONResponse(asset_json(asset))


async def _delete(request: Request, kind: Kind) -> JSONResponse:
    assets = AssetStore(request.app.state.pg)
    asset_id = request.path_params["asset_id"]
    await assets.delete(kind, asset_id, identity(request).user_id)
    return JSONResponse({ID_FIELDS[kind]: asset_id, "kind": kind, "deleted": True})


async def get_resume(request: Request) -> JSONResponse:
    """`GET /api/resumes/{id}`: text, language, summary (if any)."""
    return await _get(request, "resume")


async def get_detailed_resume(request: Request) -> JSONResponse:
    """`GET /api/detailed-resumes/{id}`."""
    return await _get(request, "detailed_resume")


async def get_job(request: Request) -> JSONResponse:
    """`GET /api/jobs/{id}` (`text` is null for a screenshot: see `image_url`)."""
    return await _get(request, "jd")


async def get_job_image(request: Request) -> Response:
    """`GET /api/jobs/{id}/image`: the screenshot, as uploaded."""
    assets = AssetStore(request.app.state.pg)
    asset = await assets.get(
        "jd", request.path_params["asset_id"], identity(request).user_id, with_image=True
    )
    if asset.image is None or asset.image_mime is None:
        raise NotFound(asset_id=asset.id)
    return Response(
        asset.image,
        media_type=asset.image_mime,
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


async def delete_resume(request: Request) -> JSONResponse:
    """`DELETE /api/resumes/{id}`."""
    return await _delete(request, "resume")


async def delete_detailed_resume(request: Request) -> JSONResponse:
    """`DELETE /api/detailed-resumes/{id}`."""
    return await _delete(request, "detailed_resume")


async def delete_job(request: Request) -> JSONResponse:
    """`DELETE /api/jobs/{id}`."""
    return await _delete(request, "jd")


async def list_assets(request: Request) -> JSONResponse:
    """`GET /api/assets?limit=N`: the caller's assets, newest first (previews, no text)."""
    assets = AssetStore(request.app.state.pg)
    raw = request.query_params.get("limit", str(DEFAULT_LIST))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"limit {raw!r}", reason="asset_limit")
    listed = await assets.list(identity(request).user_id, limit=limit)
    items = [
        {
            "id": a.id,
            "kind": a.kind,
            "lang": a.lang,
            "preview": a.preview,
            "chars": a.chars,
            "source": a.source,
            "summarized": a.summarized,
            "created_at": a.created_at.isoformat(),
            "url": READ_PATHS[a.kind] + a.id,
        }
        for a in listed
    ]
    return JSONResponse({"assets": items})
