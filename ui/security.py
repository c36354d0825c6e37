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
import mimetypes
import os
import re
import stat
from pathlib import Path

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
        if self.auth_required and not _logged_in(scope):
            if not _PUBLIC.match(path) and not _launching(scope, path):
                return await _deny(scope, send, 401, "Not authenticated")
            if scope["type"] == "http" and path in ("/", ""):
                # Gradio's login page embeds the whole API description (every endpoint, with example calls) even
                # for a visitor who has not logged in, while /gradio_api/info answers 401: strip it from the page.
                return await self.app(scope, receive, _without_api_info(send))
        return await self.app(scope, receive, send)


_API_INFO = re.compile(rb"<script>window\.gradio_api_info = .*?;</script>", re.S)


def _without_api_info(send):
    """An ASGI `send` that buffers an HTML page and replaces its embedded API description with null."""
    start, chunks = None, []

    async def wrapped(message):
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return None
        if message["type"] != "http.response.body" or start is None:
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return None
        body = _API_INFO.sub(b"<script>window.gradio_api_info = null;</script>", b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
        return await send({"type": "http.response.body", "body": body})

    return wrapped


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
    from starlette.responses import JSONResponse, Response

    from prefs.errors import UserError

    pool = store.pool_dir.resolve()
    # sha -> the file's path inside the pool (from the database, which names it). Only the name is cached: the
    # file system is asked afresh on every request, so a pool file swapped for a symlink is never followed.
    cache: dict[str, tuple[str, ...]] = {}

    def parts_of(sha: str) -> tuple[str, ...] | None:
        parts = cache.get(sha)
        if parts is None:
            try:
                row = store.get_image(sha)
            except UserError:
                return None
            path = store.image_path(row)
            try:
                parts = cache[sha] = path.parent.resolve().relative_to(pool).parts + (path.name,)
            except ValueError:  # outside the pool
                return None
        return parts

    def endpoint(request):  # sync: Starlette runs it in a worker thread, off the event loop
        sha = request.path_params.get("sha", "")
        parts = parts_of(sha) if _SHA.match(sha) else None
        body = _read_inside(pool, parts) if parts else None
        if body is None:
            return JSONResponse({"detail": "no such image in the pool"}, status_code=404)
        media = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
        # Content-addressed: the bytes behind a hash never change, so the browser may keep them for good.
        return Response(body, media_type=media, headers={"Cache-Control": "private, max-age=31536000, immutable"})

    return endpoint


def _read_inside(root: Path, parts: tuple[str, ...]) -> bytes | None:
    """The bytes of the regular file root/parts[0]/.../parts[-1], walking down with no symlink followed at any
    step (each component opened relative to its parent with O_NOFOLLOW); None when any step is not there, is a
    link, or the last is not a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fds = []
    try:
        fds.append(os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)))
        for name in parts[:-1]:
            fds.append(os.open(name, flags | getattr(os, "O_DIRECTORY", 0), dir_fd=fds[-1]))
        fds.append(os.open(parts[-1], flags, dir_fd=fds[-1]))
        if not stat.S_ISREG(os.fstat(fds[-1]).st_mode):
            return None
        with os.fdopen(fds.pop(), "rb") as f:
            return f.read()
    except OSError:
        return None
    finally:
        for fd in fds:
            os.close(fd)
