"""Launching the app: host and auth checks, the pool-image route, the key script, offline settings.

    demo, url, app = ui.server.serve(store, ServeOptions(port=0), block=False)
    ...
    ui.server.stop(demo, app)
"""

from __future__ import annotations

import dataclasses
import os
import sys
import webbrowser
from pathlib import Path

from prefs.errors import UserError
from ui.security import IMAGE_ROUTE, Gate, exposure_warning, image_endpoint

STATIC = Path(__file__).resolve().parent / "static"


@dataclasses.dataclass
class ServeOptions:
    """Where and how to listen."""

    host: str = "127.0.0.1"  # loopback unless asked: the ratings are personal
    port: int = 7860  # Gradio's usual port; 0 picks a free one
    auth: list[tuple[str, str]] | None = None  # (user, password) pairs; users are the raters
    open_browser: bool = False  # open a browser tab when one is available (else the URL is printed)
    quiet: bool = False


def parse_auth(values) -> list[tuple[str, str]] | None:
    """`USER:PASS` strings -> pairs; UserError on a malformed one."""
    pairs = []
    for v in values or ():
        user, sep, password = str(v).partition(":")
        if not sep or not user.strip() or not password:
            raise UserError(f"--auth takes USER:PASS (both non-empty), got {v!r}")
        pairs.append((user.strip(), password))
    return pairs or None


def head_html() -> str:
    """The `<head>` additions: the keyboard-shortcut and full-size-view script."""
    return f"<script>{(STATIC / 'keys.js').read_text(encoding='utf-8')}</script>"


# Runs once the page is built: put the cursor in the name box when it is shown, else let keys act at once.
ON_LOAD_JS = """() => { const n = document.querySelector('#rlft-name textarea, #rlft-name input');
  if (n && n.offsetParent !== null) n.focus(); else if (document.activeElement) document.activeElement.blur(); }"""


def serve(store, options: ServeOptions | None = None, config=None, block: bool = True):
    """Build and launch the app; returns (demo, url, rating_app). With `block`, serve until Ctrl-C."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from ui.app import AppConfig, RatingApp

    options = options or ServeOptions()
    config = config or AppConfig()
    config.auth = bool(options.auth)
    warning = exposure_warning(options.host, options.auth)
    if warning:
        print(warning, file=sys.stderr)
    app = RatingApp(store, config)
    demo = app.build()
    demo.queue(default_concurrency_limit=None)
    app_kwargs = {
        "middleware": [Middleware(Gate, auth_required=bool(options.auth))],
        "routes": [Route(IMAGE_ROUTE + "/{sha}", image_endpoint(store), methods=["GET", "HEAD"])],
    }
    port = options.port or _free_port(options.host)
    try:
        _, url, _ = demo.launch(
            server_name=options.host, server_port=port, auth=options.auth, prevent_thread_lock=True,
            quiet=True, show_error=True, share=False, footer_links=[], app_kwargs=app_kwargs,
            head=head_html(), js=ON_LOAD_JS, css=(STATIC / "style.css").read_text(encoding="utf-8"),
            ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False, run_history=False,
        )
    except OSError as e:
        app.close()
        raise UserError(f"cannot listen on {options.host}:{port}: {e}") from e
    url = f"http://{_url_host(options.host)}:{port}/"
    if not options.quiet:
        print(f"rlft ui: rating at {url}" + (" (login required)" if options.auth else ""), file=sys.stderr)
    if options.open_browser:
        open_in_browser(url)
    if block:
        try:
            demo.block_thread()
        finally:
            stop(demo, app)
    return demo, url, app


def stop(demo, app) -> None:
    """Stop the server and the prefetch threads."""
    try:
        demo.close()
    finally:
        app.close()


def open_in_browser(url: str) -> bool:
    """Open `url` in a browser tab when this machine has one; else print where to go. Returns whether it opened."""
    try:
        webbrowser.get()
        if webbrowser.open(url, new=2):
            return True
    except webbrowser.Error:
        pass
    print(f"rlft ui: no browser found here; open {url} yourself", file=sys.stderr)
    return False


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _free_port(host: str) -> int:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("0.0.0.0", "") else "127.0.0.1", 0))
        return s.getsockname()[1]
