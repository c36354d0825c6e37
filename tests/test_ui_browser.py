"""End to end in Debian's Chromium (Playwright): vote by click and by every key, undo, double click, two
raters at once, login; every vote checked in the database; no request may leave 127.0.0.1.

Locally these skip when /usr/bin/chromium is missing; in CI (RLFT_CI=1) a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from ui_helpers import module_pool, running

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000  # generous: the test machine is shared and slow


def _require_chromium():
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("RLFT_CI") == "1":
        pytest.fail(f"{CHROMIUM} is missing; CI must run the browser tests (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); browser tests skipped locally")


@pytest.fixture(scope="module")
def browser():
    """Playwright; each `Page` is its own Chromium with a fresh profile (user data dir), like a new person."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with module_pool(tmp_path_factory, "uibrowser", prompts=5, per_prompt=4) as s:
        yield s


@pytest.fixture(scope="module")
def server(store):
    with running(store, min_decision_ms=0) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def auth_server(store):
    with running(store, auth=[("erin", "secret-e")], min_decision_ms=0) as (url, app):
        yield url, app


class Page:
    """A browser tab on the app that records every request it makes."""

    def __init__(self, playwright, url):
        self.profile = tempfile.mkdtemp(prefix="rlft-chromium-")
        # Playwright passes the profile as --user-data-dir itself (it refuses the flag in `args`).
        self.context = playwright.chromium.launch_persistent_context(
            self.profile, executable_path=CHROMIUM, args=ARGS, viewport={"width": 1100, "height": 800})
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.hosts: set[str] = set()
        self.page.on("request", lambda r: self.hosts.add(urlparse(r.url).hostname or r.url.split(":")[0]))
        self.url = url

    def open(self, name: str | None = None):
        self.page.goto(self.url, wait_until="domcontentloaded")
        if name is not None:
            box = self.page.locator("#rlft-name textarea, #rlft-name input").first
            box.fill(name)
            box.press("Enter")
        self.page.wait_for_selector(".rlft-pair[data-token]")
        self.page.wait_for_function("() => [...document.querySelectorAll('.rlft-pair img')].every(i => i.complete && i.naturalWidth > 0)")
        return self

    def token(self) -> str:
        return self.page.locator(".rlft-pair").get_attribute("data-token")

    def wait_new(self, old: str) -> str:
        self.page.wait_for_function(
            "old => { const p = document.querySelector('.rlft-pair'); return p && p.dataset.token !== old; }", arg=old)
        return self.token()

    def status(self) -> str:
        return self.page.locator("#rlft-status").inner_text()

    def close(self):
        self.context.close()
        shutil.rmtree(self.profile, ignore_errors=True)
        off = {h for h in self.hosts if h not in ("127.0.0.1", "localhost", "data", "blob")}
        assert not off, f"requests left the machine: {off}"


def judgements(store, rater, include_undone=False):
    return [j for j in store.judgements(include_undone=include_undone) if j.rater == rater]


def test_vote_by_click_and_every_key_then_undo(browser, server, store):
    url, _ = server
    tab = Page(browser, url).open("kim")
    tokens = []
    tok = tab.token()
    tokens.append(tok)
    tab.page.click("#rlft-left")
    tok = tab.wait_new(tok)
    expected = ["a"]
    keys = [("ArrowLeft", "a"), ("1", "a"), ("ArrowRight", "b"), ("2", "b"), ("ArrowDown", "tie"), ("3", "tie"),
            ("4", "both_bad"), (" ", "skip"), ("s", "skip")]
    for key, outcome in keys:
        tokens.append(tok)
        tab.page.keyboard.press("Space" if key == " " else key)
        tok = tab.wait_new(tok)
        expected.append(outcome)
    rows = judgements(store, "kim")
    assert [j.outcome for j in rows] == expected
    assert [j.client_vote_id for j in rows] == tokens
    assert all(j.shown_left == "a" and j.decision_ms is not None for j in rows)
    assert "10" in tab.status()
    tab.page.keyboard.press("Backspace")
    tok = tab.wait_new(tok)
    tab.page.keyboard.press("u")
    tab.wait_new(tok)
    assert [j.outcome for j in judgements(store, "kim")] == expected[:-2]
    assert "Undid" in tab.status() and "8" in tab.status()
    tab.close()


def test_full_size_view_and_name_remembered(browser, server):
    url, _ = server
    tab = Page(browser, url).open("lee")
    tab.page.click("#rlft-left-img img")
    tab.page.wait_for_selector("#rlft-lightbox img")
    tab.page.keyboard.press("Escape")
    tab.page.wait_for_selector("#rlft-lightbox", state="detached")
    tab.page.reload(wait_until="domcontentloaded")  # asked once per browser: a reload goes straight to rating
    tab.page.wait_for_selector(".rlft-pair[data-token]")
    assert "lee" in tab.status()
    tab.close()


def test_double_click_records_one_vote(browser, server, store):
    url, app = server
    app.config.min_decision_ms = 250  # the default guard; new sessions pick it up
    try:
        tab = Page(browser, url).open("max")
        tab.page.wait_for_timeout(300)
        tok = tab.token()
        tab.page.dblclick("#rlft-right")
        tab.wait_new(tok)
        tab.page.wait_for_timeout(600)  # let a second vote arrive, if one was sent
        rows = judgements(store, "max")
        assert [(j.client_vote_id, j.outcome) for j in rows] == [(tok, "b")]
        tab.close()
    finally:
        app.config.min_decision_ms = 0


def test_two_raters_at_once(browser, server, store):
    url, _ = server
    a, b = Page(browser, url).open("ann"), Page(browser, url).open("bo")
    for _ in range(3):
        ta, tb = a.token(), b.token()
        a.page.keyboard.press("1")
        b.page.keyboard.press("2")
        a.wait_new(ta)
        b.wait_new(tb)
    assert [j.outcome for j in judgements(store, "ann")] == ["a"] * 3
    assert [j.outcome for j in judgements(store, "bo")] == ["b"] * 3
    a.close()
    b.close()


def test_a_slow_page_load_event_does_not_wipe_a_started_pair(browser, server, store, monkeypatch):
    """The page-load event and the rater's Enter run concurrently; a load that finishes last must not reset
    the page to the name prompt (seen in CI on a loaded machine: the second rater never got a pair)."""
    url, app = server
    fast = app.rater_for

    def slow_on_load(name, request):
        if not name:  # the page-load event asks with the (empty) saved name; Enter asks with the typed one
            time.sleep(2.0)
        return fast(name, request)

    monkeypatch.setattr(app, "rater_for", slow_on_load)
    tab = Page(browser, url)
    tab.page.goto(url, wait_until="domcontentloaded")
    box = tab.page.locator("#rlft-name textarea, #rlft-name input").first
    box.fill("lee")
    box.press("Enter")
    tab.page.wait_for_selector(".rlft-pair[data-token]")
    tok = tab.token()
    time.sleep(3.0)  # the load event has finished by now
    assert tab.page.locator(".rlft-pair[data-token]").count() == 1 and tab.token() == tok
    tab.page.keyboard.press("1")
    tab.wait_new(tok)
    assert [j.outcome for j in judgements(store, "lee")] == ["a"]
    tab.close()


def test_login_then_votes_go_to_the_login_name(browser, auth_server, store):
    url, _ = auth_server
    tab = Page(browser, url)
    r = tab.page.goto(url + "rlft/img/" + next(iter(store.images())).sha256)
    assert r.status == 401  # no image before login
    tab.page.goto(url, wait_until="domcontentloaded")
    tab.page.locator("input[type=password]").wait_for()
    assert tab.page.locator(".rlft-pair").count() == 0
    tab.page.locator("input:not([type=password])").first.fill("erin")
    tab.page.locator("input[type=password]").fill("secret-e")
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_selector(".rlft-pair[data-token]")
    assert tab.page.locator("#rlft-name").is_hidden()  # no name to type: the login is the rater
    tok = tab.token()
    tab.page.keyboard.press("ArrowDown")
    tab.wait_new(tok)
    assert [(j.client_vote_id, j.outcome) for j in judgements(store, "erin")] == [(tok, "tie")]
    tab.close()
