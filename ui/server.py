"""Launching the app: host and auth checks, the pool-image route, the key script, offline settings.

    demo, url, app = ui.server.serve(store, ServeOptions(port=0), block=False)
    ...
    ui.server.stop(demo, app)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import time
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


# Runs once the page is built: put the cursor in the name box when it is shown (not when the browser remembers
# the rater: keys.js hides the box then), else let keys act at once.
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
        _check_port(options.host, port)
        _, url, _ = demo.launch(
            server_name=options.host, server_port=port, auth=options.auth, prevent_thread_lock=True,
            quiet=True, show_error=True, share=False, footer_links=[], app_kwargs=app_kwargs,
            head=head_html(), js=ON_LOAD_JS, css=(STATIC / "style.css").read_text(encoding="utf-8"),
            ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False, run_history=False,
        )
    except UserError:
        app.close()
        raise
    except OSError as e:  # Gradio's own wording names its internals (GRADIO_SERVER_PORT, server_port): not ours
        app.close()
        raise UserError(f"cannot listen on {options.host}:{port} ({e.strerror or 'in use?'}): choose another "
                        "with --port N, or --port 0 for any free port") from e
    app.scores.warm_up()  # the newest reward version loads in the background: the first Gallery open is fast
    url = f"http://{_url_host(options.host)}:{port}/"
    if not options.quiet:
        print(f"rlft ui: rating at {url}" + (" (login required)" if options.auth else ""), file=sys.stderr)
    if options.open_browser:
        open_in_browser(url)
    if block:
        try:
            while demo.is_running:  # Gradio's block_thread waits up to 5 s for open pages to hang up on Ctrl-C
                time.sleep(0.1)
        finally:
            stop(demo, app)
    return demo, url, app


SHUTDOWN_GRACE_S = 0.3  # requests in flight get this long to finish on stop; open pages' event streams are then cut


def stop(demo, app) -> None:
    """Stop the server and the prefetch threads, promptly: uvicorn's graceful shutdown would otherwise wait
    for every open browser tab to hang up its event stream (Gradio gives up after 5 s)."""
    config = getattr(getattr(demo, "server", None), "config", None)
    if config is not None:
        config.timeout_graceful_shutdown = SHUTDOWN_GRACE_S
    _quiet_cancellations()
    try:
        demo.close(verbose=False)
    finally:
        app.close()


class _NoCancelled(logging.Filter):
    """Drops uvicorn's reports of the tasks it cancels at shutdown (cutting open pages' streams is the plan)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError) and "graceful shutdown exceeded" not in record.getMessage()


def _quiet_cancellations() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _NoCancelled) for f in logger.filters):
        logger.addFilter(_NoCancelled())


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


def _check_port(host: str, port: int) -> None:
    """UserError naming --port when `host:port` cannot be listened on (in use, or an address not of this machine)."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use (another rlft ui?): choose another with --port N, "
                                "or --port 0 for any free port") from None
            if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(e, socket.gaierror):
                raise UserError(f"cannot listen on {host}: not an address of this machine (--host)") from None
            if e.errno == errno.EACCES:
                raise UserError(f"port {port} needs administrator rights: choose one above 1023 with --port N, "
                                "or --port 0 for any free port") from None
            raise


def _free_port(host: str) -> int:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("0.0.0.0", "") else "127.0.0.1", 0))
        return s.getsockname()[1]
