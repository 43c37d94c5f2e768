"""Static assets served by the app itself, fingerprinted: `/static/{stem}.{hash}{suffix}`.

The content hash in the name makes each URL immutable, so it is cached for a year and a
new deploy changes the URL (no CDN, no build step: the hashes are taken when the pages
are first built in a process).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response

from lib.errors import NotFound

PREFIX = "/static/"
HASH_CHARS = 12
IMMUTABLE = "public, max-age=31536000, immutable"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True)
class Asset:
    """One static file: its fingerprinted name, bytes and media type."""

    name: str
    fingerprinted: str
    content: bytes
    media_type: str
    etag: str


def fingerprint(name: str, content: bytes) -> str:
    """`queues.js` + bytes → `queues.3f2a9c0d1b7e.js` (sha256 prefix of the content)."""
    stem, dot, suffix = name.rpartition(".")
    digest = hashlib.sha256(content).hexdigest()[:HASH_CHARS]
    return f"{stem}.{digest}.{suffix}" if dot else f"{name}.{digest}"


class Assets:
    """The files of `producer/web/static/`, read once, by plain and fingerprinted name."""

    def __init__(self, package: str = "producer.web", folder: str = "static") -> None:
        self._by_name: dict[str, Asset] = {}
        self._by_url_name: dict[str, Asset] = {}
        for entry in files(package).joinpath(folder).iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if not entry.is_file() or suffix not in _TYPES:
                continue
            content = entry.read_bytes()
            asset = Asset(
                name=entry.name,
                fingerprinted=fingerprint(entry.name, content),
                content=content,
                media_type=_TYPES[suffix],
                etag='"' + hashlib.sha256(content).hexdigest()[:32] + '"',
            )
            self._by_name[asset.name] = asset
            self._by_url_name[asset.fingerprinted] = asset

    def url(self, name: str) -> str:
        """The immutable URL of a static file.

        Raises:
            KeyError: no such file (a template names an asset that does not exist).
        """
        return PREFIX + self._by_name[name].fingerprinted

    def names(self) -> list[str]:
        """Every static file's plain name."""
        return sorted(self._by_name)

    async def endpoint(self, request: Request) -> Response:
        """`GET /static/{name}`: a fingerprinted file, cached for good; anything else 404.

        Raises:
            NotFound: an unknown name, or a hash that is not the file's current content.
        """
        asset = self._by_url_name.get(request.path_params["name"])
        if asset is None:
            raise NotFound("no such asset")
        headers = {
            "Cache-Control": IMMUTABLE,
            "ETag": asset.etag,
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.content, media_type=asset.media_type, headers=headers)
