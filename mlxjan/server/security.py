"""Request gatekeeping as plain ASGI middleware: Host allowlist, API key, Origin, body size cap.

Plain ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlxjan.errors import (
    AuthenticationError,
    ForbiddenError,
    InsecureBindError,
    MlxjanError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from mlxjan.server.errors import error_response, protocol_of
from mlxjan.server.web.assets import is_page_path
from mlxjan.settings import Settings

PUBLIC_PATHS = frozenset({"/health"})
# Reading the page needs no key (the page asks for it, then sends it on every API call).
PAGE_METHODS = frozenset({"GET", "HEAD"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
LOOPBACK_ORIGIN_REGEX = r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$"


def allowed_hosts(settings: Settings) -> frozenset[str]:
    extra = {h.lower() for h in settings.trusted_hosts}
    if settings.host not in ("0.0.0.0", "::", ""):
        extra.add(settings.host.lower())
    return LOOPBACK_HOSTS | extra


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def check_bind(settings: Settings) -> None:
    """Refuse to listen beyond loopback without an API key."""
    # An empty key counts as none: SecurityMiddleware does not enforce it.
    no_key = settings.api_key is None or not settings.api_key.get_secret_value()
    if not is_loopback(settings.host) and no_key:
        raise InsecureBindError(
            f"refusing to listen on {settings.host} without an API key: anyone on the network "
            "could use this server. Set api_key (or api_key_file), or bind 127.0.0.1.")


def host_name(header: str) -> str:
    """The host part of a Host header, without port or IPv6 brackets ("" if malformed)."""
    try:
        parsed = urlsplit(f"//{header}")
    except ValueError:  # e.g. unbalanced IPv6 brackets: refuse (403), don't crash (500)
        return ""
    return (parsed.hostname or "").lower()


def same_origin(origin: str, host: str) -> bool:
    """Whether `origin` names this server as the request's Host header does: the page's own
    fetches (browsers send Origin on same-origin POSTs)."""
    try:
        sent, served = urlsplit(origin), urlsplit(f"//{host}")
        ports = sent.port, served.port  # None where left out (the scheme's default)
    except ValueError:
        return False
    return (sent.scheme in ("http", "https") and sent.hostname is not None
            and sent.hostname == served.hostname and ports[0] == ports[1])


def is_public(method: str, path: str) -> bool:
    return path in PUBLIC_PATHS or (method in PAGE_METHODS and is_page_path(path))


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self._app = app
        self._hosts = allowed_hosts(settings)
        self._key = settings.api_key.get_secret_value().encode() if settings.api_key else None
        self._max_body = settings.max_body_bytes
        self._prefix = settings.api_prefix
        self._origins = frozenset(o.rstrip("/") for o in settings.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        err = self._check(scope, headers)
        if err is not None:
            protocol = protocol_of(scope["path"], headers, self._prefix)
            await error_response(err, protocol)(scope, receive, send)
            return
        await self._app(scope, self._capped(receive), send)

    def _check(self, scope: Scope, headers: dict[str, str]) -> MlxjanError | None:
        if "*" not in self._hosts and host_name(headers.get("host", "")) not in self._hosts:
            return ForbiddenError("Host header not allowed (add it to trusted_hosts).")
        if self._key is not None and not is_public(scope["method"], scope["path"]) \
                and scope["method"] != "OPTIONS" and not self._key_ok(headers):
            return AuthenticationError("Invalid or missing API key. Send it as "
                                       "'Authorization: Bearer <key>' or 'x-api-key: <key>'.")
        origin = headers.get("origin")
        if origin is not None and not self._origin_ok(origin, headers.get("host", "")):
            # Browsers send Origin on cross-site requests: a page the user merely visits must
            # not drive the local server (CORS alone would still let a "simple" POST through).
            return ForbiddenError(f"Origin '{origin}' is not allowed (add it to cors_origins).")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_body:
            return _too_large(self._max_body)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        has_body = length not in ("", "0") or "transfer-encoding" in headers
        if has_body and content_type != "application/json":
            return UnsupportedMediaTypeError(
                "POST bodies must be JSON: send 'Content-Type: application/json'.")
        return None

    def _origin_ok(self, origin: str, host: str) -> bool:
        if origin.rstrip("/") in self._origins or re.fullmatch(
                LOOPBACK_ORIGIN_REGEX, origin) is not None:
            return True
        # The server's own origin, but only for a Host named in the allowlist: with
        # trusted_hosts "*" any Host passes, and a DNS-rebinding page would be "same-origin".
        return host_name(host) in self._hosts and same_origin(origin, host)

    def _key_ok(self, headers: dict[str, str]) -> bool:
        assert self._key is not None
        auth = headers.get("authorization", "")
        offered = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get(
            "x-api-key", "")
        return hmac.compare_digest(offered.encode(), self._key)

    def _capped(self, receive: Receive) -> Receive:
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max_body:
                    raise _too_large(self._max_body)
            return message

        return capped_receive


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"Request body larger than {limit} bytes.")
