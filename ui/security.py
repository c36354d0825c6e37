"""What the server lets a browser fetch: pool images by hash, and (with --auth) nothing else before login.

Gradio protects its data routes with `--auth` but still answers some (heartbeat, stream, static helpers)
without a login, and its `/file=` routes serve files from its cache. This app needs none of its file
routes: images come from one route of ours that takes a 64-hex-digit content hash, looks it up in the
pool and serves that file, so no path from the browser ever reaches the file system. An ASGI middleware
(outermost, before any Gradio route) refuses Gradio's file/upload/proxy routes always, and every route
except the login page and its static assets to a client without a valid Gradio login cookie.
"""

from __future__ import annotations

import ipaddress
import json
import re

IMAGE_ROUTE = "/rlft/img"
_SHA = re.compile(r"^[0-9a-f]{64}$")

# Routes never served: we serve no files through Gradio, take no uploads, proxy nothing.
_BLOCKED = re.compile(r"^/(gradio_api/)?(file=|file/|upload|proxy=|stream/|upload_progress)")
# Served before login: the login page itself, its form post, and the static assets it is built from.
_PUBLIC = re.compile(
    r"^/(|login/?|favicon\.ico|robots\.txt|manifest\.json|theme\.css|gradio_api/theme\.css"
    r"|assets/.*|static/.*|svelte/.*|gradio_api/login_check/?|gradio_api/app_id/?)$"
)
_STARTUP = "/gradio_api/startup-events"  # Gradio calls it itself, without a login, once at launch


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, auth: list | None) -> str | None:
    """The warning to print when the server is reachable from other machines without a login, else None."""
    if is_loopback(host) or auth:
        return None
    return (f"warning: listening on {host} without --auth: anyone who can reach this machine can rate as anyone "
            "and see every image; add --auth USER:PASS")


class Gate:
    """ASGI middleware: blocks Gradio's file routes; with auth on, refuses unauthenticated requests.

    The login cookie is checked against the Gradio app's own token table (`app.tokens`), so logging in
    through Gradio's login page is the only way in.
    """

    def __init__(self, app, auth_required: bool = False):
        self.app = app
        self.auth_required = auth_required

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if _BLOCKED.match(path) or "\x00" in path:
            return await _deny(scope, send, 404, "not served by rlft")
        if self.auth_required and not _PUBLIC.match(path) and not _logged_in(scope) and not _launching(scope, path):
            return await _deny(scope, send, 401, "Not authenticated")
        return await self.app(scope, receive, send)


def _launching(scope, path: str) -> bool:
    return path == _STARTUP and not getattr(scope.get("app"), "startup_events_triggered", True)


def _logged_in(scope) -> bool:
    app = scope.get("app")
    tokens = getattr(app, "tokens", None)
    cookie_id = getattr(app, "cookie_id", None)
    if not tokens or cookie_id is None:
        return False
    cookies = _cookies(scope)
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        token = cookies.get(name)
        if token and token in tokens:
            return True
    return False


def _cookies(scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name, _, val = part.strip().partition("=")
                if name:
                    out[name] = val
    return out


async def _deny(scope, send, status: int, detail: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def image_endpoint(store):
    """A Starlette endpoint serving pool images by sha256: `GET /rlft/img/<sha256>`."""
    from starlette.responses import FileResponse, JSONResponse

    from prefs.errors import UserError

    pool = store.pool_dir.resolve()
    cache: dict[str, str] = {}  # sha -> path; content-addressed, so entries never go stale

    def find(sha: str):
        path = cache.get(sha)
        if path is None:
            try:
                row = store.get_image(sha)
            except UserError:
                return None
            resolved = store.image_path(row).resolve()
            if pool not in resolved.parents or not resolved.is_file():
                return None
            path = cache[sha] = str(resolved)
        return path

    def endpoint(request):  # sync: Starlette runs it in a worker thread, off the event loop
        sha = request.path_params.get("sha", "")
        path = find(sha) if _SHA.match(sha) else None
        if path is None:
            return JSONResponse({"detail": "no such image in the pool"}, status_code=404)
        # Content-addressed: the bytes behind a hash never change, so the browser may keep them for good.
        return FileResponse(path, headers={"Cache-Control": "private, max-age=31536000, immutable"})

    return endpoint
