"""The page's files and headers, as plain values (no web framework here).

Files are read once from the installed package (`importlib.resources`, so a wheel install
has them too) and served from memory: the whole page is a few tens of kilobytes, and a fixed
table of names means no request path ever becomes a file path.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
from dataclasses import dataclass
from importlib import resources

PACKAGE = "mlxjan.server.web"
STATIC_PREFIX = "/static/"
PAGE_PATH = "/"
# Placeholder in index.html replaced by the page's settings (a JSON object, attribute-escaped).
CONFIG_PLACEHOLDER = "{{config}}"

MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Everything from this server only; no inline script or style, no eval, no plugins, no
# framing (clickjacking), no form posts or <base> rewrites elsewhere.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # For browsers that predate frame-ancestors.
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str  # quoted, as sent in ETag and compared with If-None-Match


@dataclass(frozen=True)
class PageConfig:
    """What the page must know before its first API call; rendered into index.html."""

    api_prefix: str
    default_model: str
    key_required: bool
    version: str

    def as_json(self) -> str:
        return json.dumps({"apiPrefix": self.api_prefix, "defaultModel": self.default_model,
                           "keyRequired": self.key_required, "version": self.version})


def is_page_path(path: str) -> bool:
    """The page and its files: public, so a browser can load them before it has a key."""
    return path == PAGE_PATH or path.startswith(STATIC_PREFIX)


def _asset(body: bytes, media_type: str) -> Asset:
    return Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


@functools.cache
def static_assets() -> dict[str, Asset]:
    """The files under static/, by name."""
    folder = resources.files(PACKAGE).joinpath("static")
    assets = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind("."):] if "." in entry.name else ""
        if entry.is_file() and suffix in MEDIA_TYPES:
            assets[entry.name] = _asset(entry.read_bytes(), MEDIA_TYPES[suffix])
    return assets


@functools.cache
def index_template() -> str:
    return resources.files(PACKAGE).joinpath("index.html").read_text(encoding="utf-8")


def render_index(template: str, config: PageConfig) -> str:
    """index.html with the config as an attribute value: escaped, so a prefix or model id
    with quotes or angle brackets stays data."""
    return template.replace(CONFIG_PLACEHOLDER, html.escape(config.as_json(), quote=True))


def not_modified(asset: Asset, if_none_match: str | None) -> bool:
    if not if_none_match:
        return False
    offered = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return asset.etag in offered or "*" in offered
