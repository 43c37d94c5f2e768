"""Server-rendered pages: Jinja2 templates, text from the dictionaries, security headers.

Imported only when a page is first asked for (`producer/web/lazy.py`): the producer's cold
start does not load Jinja2.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from lib.i18n import Lang, namespace, text
from producer.web.assets import Assets
from producer.web.locale import localized, other_lang

# Modules import each other by these names through the page's import map, so every
# module URL stays fingerprinted.
MODULES = {
    "slotline/common": "common.js",
    "slotline/api": "api.js",
    "slotline/markdown": "markdown.js",
    "slotline/partial_json": "partial_json.js",
    "slotline/results": "results.js",
    "slotline/service_stream": "service_stream.js",
    "slotline/service_view": "service_view.js",
}


def _csp(nonce: str) -> str:
    return "; ".join(
        (
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class Renderer:
    """Renders a page template in one language with its namespaces' texts."""

    def __init__(self, assets: Assets) -> None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("producer.web", "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.assets = assets
        self.templates = Jinja2Templates(env=env)

    def page(
        self,
        request: Request,
        template: str,
        *,
        lang: Lang,
        page: str,
        namespaces: Iterable[str] = (),
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        """A page in `lang`: `t()` and `asset()` in its context, the script texts embedded.

        Args:
            request: the request.
            template: the template's file name.
            lang: the page's language (`<html lang>`).
            page: the page's path without the locale (`/queues`), for the language switch.
            namespaces: dictionary namespaces its scripts need (besides `common`).
            status_code: the response status.
            context: more template variables.

        Raises:
            MissingText: the template names a key the dictionaries do not have.
        """
        nonce = secrets.token_urlsafe(16)
        other = other_lang(lang)
        script_texts: dict[str, str] = {}
        for name in ("common", *namespaces):
            script_texts.update(namespace(lang, name))

        def t(key: str, **params: Any) -> str:
            return text(key, lang, params)

        values = {
            "lang": lang,
            "other_lang": other,
            "page": page,
            "switch_href": localized(other, page),
            "here": localized(lang, page),
            "t": t,
            "asset": self.assets.url,
            "nonce": nonce,
            "import_map": {"imports": {k: self.assets.url(v) for k, v in MODULES.items()}},
            "script_texts": script_texts,
            **context,
        }
        headers = {
            "Content-Security-Policy": _csp(nonce),
            "Cache-Control": "no-store",
            "Content-Language": lang,
            "Referrer-Policy": "same-origin",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        }
        return self.templates.TemplateResponse(
            request, template, values, status_code=status_code, headers=headers
        )
