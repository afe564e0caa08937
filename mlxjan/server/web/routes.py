"""`GET /` (the page) and `GET /static/{name}` (its files), with the page's security headers.

Public routes (see security.py): a browser must load the page before it can ask for the API
key. Left out of the OpenAPI schema: they are not part of the API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from mlxjan import __version__
from mlxjan.errors import NotFoundError
from mlxjan.server.web.assets import (
    SECURITY_HEADERS,
    STATIC_PREFIX,
    PageConfig,
    index_template,
    not_modified,
    render_index,
    static_assets,
)
from mlxjan.settings import Settings

router = APIRouter(include_in_schema=False)


def page_config(settings: Settings) -> PageConfig:
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    return PageConfig(api_prefix=settings.api_prefix, default_model=settings.default_model,
                      key_required=bool(key), version=__version__)


@router.api_route("/", methods=["GET", "HEAD"])
async def index(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    body = render_index(index_template(), page_config(settings))
    # Rendered per request from settings: never cached stale after an upgrade or restart.
    return Response(body, media_type="text/html; charset=utf-8",
                    headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.api_route(STATIC_PREFIX + "{name}", methods=["GET", "HEAD"])
async def static(name: str, request: Request) -> Response:
    asset = static_assets().get(name)
    if asset is None:
        raise NotFoundError(f"No page file named '{name}'.")
    # Revalidated each load (a local server answers a 304 in no time), so a new version
    # of the page is never mixed with an old cached module.
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if not_modified(asset, request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
