"""End to end in Debian's Chromium (Playwright): vote by click and by every key, undo, double click, two
raters at once, login; the rater kept across reloads and restarts; plain words when a vote cannot be recorded
(server down, no name yet, nothing left to rate); the confirmation; the phone layout; Ctrl-C; every vote
checked in the database; no request may leave 127.0.0.1.

Locally these skip when /usr/bin/chromium is missing; in CI (RLFT_CI=1) a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
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


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 3}


class Page:
    """A browser tab on the app that records every request it makes (`device`: Playwright context options)."""

    def __init__(self, playwright, url, **device):
        self.profile = tempfile.mkdtemp(prefix="rlft-chromium-")
        device = device or {"viewport": {"width": 1100, "height": 800}}
        # Playwright passes the profile as --user-data-dir itself (it refuses the flag in `args`).
        self.context = playwright.chromium.launch_persistent_context(
            self.profile, executable_path=CHROMIUM, args=ARGS, **device)
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

    def notice(self) -> str:
        """The page's own notice at the bottom of the window (empty when none is shown)."""
        return self.page.evaluate("() => (document.querySelector('#rlft-notice:not([hidden])') || {}).textContent || ''")

    def wait_notice(self, text: str) -> str:
        self.page.wait_for_function(
            "t => ((document.querySelector('#rlft-notice:not([hidden])') || {}).textContent || '').includes(t)", arg=text)
        return self.notice()

    def toasts(self) -> list[str]:
        return self.page.locator(".toast-body").all_inner_texts()

    def wait_state(self, state: str):
        self.page.wait_for_selector(f"#rlft-pair [data-state={state}]")

    def vote_buttons_enabled(self) -> list[bool]:
        return [self.page.locator(f"#{i}").is_enabled() for i in ("rlft-left", "rlft-tie", "rlft-bad", "rlft-skip",
                                                                   "rlft-right")]

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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_reload_keeps_the_rater_and_keys_keep_voting(browser, server, store):
    # Reloaded, the page showed the name box again with the cursor in it: "1" typed into it, and Enter then
    # rated as a new rater named "1".
    url, _ = server
    tab = Page(browser, url).open("rina")
    tok = tab.token()
    tab.page.keyboard.press("1")
    tab.wait_new(tok)
    tab.page.reload(wait_until="domcontentloaded")
    tab.page.wait_for_selector(".rlft-pair[data-token]")
    assert tab.page.locator("#rlft-name").is_hidden()
    assert tab.page.evaluate("() => document.activeElement.closest('#rlft-name') === null")
    tok = tab.token()
    tab.page.keyboard.press("1")
    tab.wait_new(tok)
    assert [j.outcome for j in judgements(store, "rina")] == ["a", "a"]
    assert "1" not in store.raters() and "rating as rina" in tab.status()
    tab.close()


def test_the_name_survives_a_server_restart_and_matches_regardless_of_case(browser, store):
    # After a restart the page reloads itself; Gradio's BrowserState could no longer read the name (its key
    # changes with every server process), so the name box came back, and "Alice" vs "alice" split one person.
    port = _free_port()
    with running(store, port=port, min_decision_ms=0) as (url, _):
        tab = Page(browser, url).open("Tess")
        tok = tab.token()
        tab.page.keyboard.press("2")
        tok = tab.wait_new(tok)
    tab.page.keyboard.press("1")  # the server is down: the page notices, and reloads itself once it is back
    tab.wait_notice("Not recorded")
    with running(store, port=port, min_decision_ms=0) as (url, _):
        tab.page.wait_for_function(  # reloaded, it starts the remembered rater at once
            "old => { const p = document.querySelector('.rlft-pair'); return p && p.dataset.token && p.dataset.token !== old; }",
            arg=tok, timeout=60_000)
        assert tab.page.locator("#rlft-name").is_hidden() and "rating as Tess" in tab.status()
        tok = tab.token()
        tab.page.keyboard.press("1")
        tab.wait_new(tok)
        other = Page(browser, url).open("  tESS ")  # another browser, the same person typing carelessly
        assert "rating as Tess" in other.status()
        tok = other.token()
        other.page.keyboard.press("3")
        other.wait_new(tok)
        assert [j.outcome for j in judgements(store, "Tess")] == ["b", "a", "tie"]
        assert not [r for r in store.raters() if r != "Tess" and r.casefold().strip() == "tess"]
        tab.close()
        other.close()


def test_a_vote_while_the_server_is_down_is_reported_as_not_recorded(browser, store):
    # It showed only Gradio's "Connection to the server was lost" and dropped the vote.
    port = _free_port()
    with running(store, port=port, min_decision_ms=0) as (url, _):
        tab = Page(browser, url).open("uma")
    before = len(judgements(store, "uma"))
    tab.page.keyboard.press("ArrowRight")
    text = tab.wait_notice("Not recorded")
    assert "right better" in text
    tab.page.keyboard.press("3")  # still down: said again at once, for this vote
    tab.wait_notice("(tie)")
    assert len(judgements(store, "uma")) == before
    with running(store, port=port, min_decision_ms=0) as (url, _):
        tab.page.wait_for_function(  # the page reloads by itself and says what happened to that vote
            "() => ((document.querySelector('#rlft-notice:not([hidden])') || {}).textContent || '')"
            ".includes('was not recorded')", timeout=60_000)
        tab.page.wait_for_selector(".rlft-pair[data-token]")
        assert "(tie) was not recorded" in tab.notice()
        tok = tab.token()
        tab.page.keyboard.press("1")
        tab.wait_new(tok)
        assert [j.outcome for j in judgements(store, "uma")][before:] == ["a"]
        tab.close()


def test_a_vote_key_before_a_name_asks_for_the_name(browser, server, store, capfd):
    # It answered "This page is older than the server: reload it." and printed a traceback.
    url, _ = server
    tab = Page(browser, url)
    tab.page.goto(url, wait_until="domcontentloaded")
    tab.wait_state("need-name")
    assert not any(tab.vote_buttons_enabled())
    tab.page.mouse.click(5, 5)  # the cursor leaves the name box
    tab.page.keyboard.press("1")
    assert "Type your name first" in tab.wait_notice("Type your name")
    assert tab.page.evaluate("() => !!document.activeElement.closest('#rlft-name')")  # and the cursor is put there
    tab.page.keyboard.type("vic")
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_selector(".rlft-pair[data-token]")
    assert all(tab.vote_buttons_enabled()) and judgements(store, "vic") == []
    assert not tab.toasts() and "Traceback" not in capfd.readouterr().err
    tab.close()


@pytest.fixture
def tiny_store(tmp_path):
    from ui_helpers import toy_pool

    import prefs

    s = prefs.open_store(home=tmp_path / "tiny", seed=0)
    toy_pool(s, prompts=1, per_prompt=3)  # three pairs in all
    yield s
    s.close()


def test_an_exhausted_pool_says_so_and_offers_new_images(browser, tiny_store):
    # A key then claimed a restart ("That pair is no longer on offer ... Here is a fresh pair") and showed none.
    from ui_helpers import toy_pool

    with running(tiny_store, min_decision_ms=0) as (url, _):
        tab = Page(browser, url).open("wes")
        for _ in range(3):
            tok = tab.token()
            tab.page.keyboard.press("1")
            tab.page.wait_for_function("old => { const p = document.querySelector('#rlft-pair .rlft-pair, "
                                       "#rlft-pair .rlft-empty'); return p && p.dataset.token !== old; }", arg=tok)
        tab.wait_state("exhausted")
        text = tab.page.locator("#rlft-pair").inner_text()
        assert "exhausted" in text and "rlft generate" in text
        assert not any(tab.vote_buttons_enabled())
        tab.page.keyboard.press("2")
        assert "exhausted" in tab.wait_notice("exhausted")
        assert "restart" not in tab.status() + tab.notice() and len(judgements(tiny_store, "wes")) == 3
        toy_pool(tiny_store, prompts=2, per_prompt=1)  # new images arrive while the page is open
        tab.page.wait_for_selector(".rlft-pair[data-token]", timeout=30_000)
        assert "New images arrived" in tab.status() and "restart" not in tab.status()
        assert all(tab.vote_buttons_enabled())
        tok = tab.token()
        tab.page.keyboard.press("2")
        tab.wait_new(tok)
        assert [j.outcome for j in judgements(tiny_store, "wes")] == ["a", "a", "a", "b"]
        tab.close()


def test_each_vote_is_confirmed_with_the_choice_and_the_pairs_left(browser, server, store):
    # Nothing said which choice was recorded, nor how much was left.
    import re

    url, _ = server
    tab = Page(browser, url).open("xia")

    def left():
        return int(re.search(r"([\d,]+) same-prompt pairs? left", tab.status()).group(1).replace(",", ""))

    n0 = left()
    tok = tab.token()
    tab.page.keyboard.press("2")
    tab.wait_new(tok)
    assert "right better, saved" in tab.status() and left() == n0 - 1
    tok = tab.token()
    tab.page.keyboard.press("4")
    tab.wait_new(tok)
    assert "both bad, saved" in tab.status() and left() == n0 - 2
    assert [j.outcome for j in judgements(store, "xia")] == ["b", "both_bad"]
    tab.close()


def test_on_a_phone_the_pair_and_the_buttons_fit_one_screen_and_a_tap_votes(browser, server, store):
    # On 390x844 the buttons started below the fold, the images stacked top/bottom under left/right labels,
    # the buttons wrapped 3+2, and after a tap the first image was scrolled away.
    url, _ = server
    tab = Page(browser, url, **PHONE).open("yan")
    boxes = tab.page.evaluate("""() => Object.fromEntries(['#rlft-left-img img', '#rlft-right-img img', '#rlft-left',
        '#rlft-tie', '#rlft-bad', '#rlft-skip', '#rlft-right'].map(s => { const r = document.querySelector(s)
        .getBoundingClientRect(); return [s, [r.left, r.top, r.right, r.bottom]]; }))""")
    left, right = boxes.pop("#rlft-left-img img"), boxes.pop("#rlft-right-img img")
    assert left[2] <= right[0] and abs(left[1] - right[1]) < 2  # side by side: left is on the left
    assert min(left[2] - left[0], right[2] - right[0]) >= 120  # still big enough to judge
    tops = {round(b[1]) for b in boxes.values()}
    assert len(tops) == 1, boxes  # the five buttons on one row
    assert max(b[3] for b in [left, right, *boxes.values()]) <= 844 and min(b[0] for b in boxes.values()) >= 0
    assert max(b[2] for b in boxes.values()) <= 390
    tok = tab.token()
    tab.page.tap("#rlft-right-img img")  # a tap on an image votes for it
    tab.wait_new(tok)
    assert [j.outcome for j in judgements(store, "yan")] == ["b"]
    assert tab.page.evaluate("() => window.scrollY") == 0
    top = tab.page.evaluate("() => document.querySelector('#rlft-left-img img').getBoundingClientRect().top")
    assert 0 <= top < 844
    tok = tab.token()
    tab.page.tap("#rlft-left")  # the buttons work by touch too
    tab.wait_new(tok)
    assert [j.outcome for j in judgements(store, "yan")] == ["b", "a"]
    tab.close()


def test_ctrl_c_stops_the_server_promptly_with_a_page_open(browser, store):
    # With a browser tab open, Ctrl-C took about 6 s: Gradio waited for the tab's event stream to hang up.
    import signal
    import subprocess
    import sys

    env = {**os.environ, "RLFT_HOME": str(store.pool_dir.parent)}
    # Ctrl-C in a terminal: SIGINT at its default, also when this test runs in a background job (where the shell
    # starts it ignored, and a child would inherit that)
    proc = subprocess.Popen([sys.executable, "-m", "rlft", "ui", "--no-generate", "--port", "0"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    rest: list[str] = []  # the server's later stderr, drained as it comes: a full pipe would block its exit
    try:
        line = proc.stderr.readline()
        assert "rating at" in line, line
        drain = threading.Thread(target=lambda: rest.extend(proc.stderr), daemon=True)
        drain.start()
        tab = Page(browser, line.split("rating at ")[1].split()[0]).open("zoe")
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("Ctrl-C did not stop the server in 30 s; it printed:\n" + "".join(rest)[-4000:]) from None
        took = time.perf_counter() - t0
        tab.close()
        drain.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 2.5, f"Ctrl-C took {took:.1f} s; the server printed:\n" + "".join(rest)[-4000:]
    assert "stopped" in "".join(rest)


def _svg_texts(page, elem_id: str) -> list[str]:
    return page.evaluate(f"() => [...document.querySelectorAll('#{elem_id} svg text')].map(t => t.textContent)")


def _pick(page, elem_id: str, option: str):
    """Choose `option` in a Gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option).click()


def test_the_progress_tab_speaks_left_right_fits_each_rater_and_stays_current(browser, tmp_path, monkeypatch):
    # The reward plot was empty with one version; a burst of judgements gave a time axis of ".500 .500 ..."; a new
    # rater stayed out of the legend until the page was reopened; outcomes read "A/B better"; the per-rater table's
    # headers broke letter by letter on a phone; a person's 12 votes were a flat line beside 300 simulated ones.
    from ui_helpers import toy_pool

    import prefs
    import ui.app

    store = prefs.open_store(home=tmp_path / "progress", seed=0)
    shas = toy_pool(store, prompts=6, per_prompt=5)
    pairs = [(a, b) for i, a in enumerate(shas) for b in shas[i + 1:]][:300]
    store.record_judgements([{"image_a": a, "image_b": b, "outcome": "a", "rater": "sim-warm"} for a, b in pairs])
    monkeypatch.setattr(ui.app, "reward_versions", lambda: [{"id": "r0001", "metrics": {"val_accuracy": 0.71}}])
    with running(store, min_decision_ms=0) as (url, _):
        tab = Page(browser, url, **PHONE).open("pat")
        for key in ("1", "2", "3"):
            tok = tab.token()
            tab.page.keyboard.press(key)
            tab.wait_new(tok)
        tab.page.get_by_role("tab", name="Progress").click()
        tab.page.wait_for_function("() => document.querySelectorAll('#rlft-time-plot svg text').length > 3 && "
                                   "document.querySelectorAll('#rlft-reward-plot svg text').length > 3 && "
                                   "document.querySelector('#rlft-raters table')")
        texts = tab.page.evaluate("() => [...document.querySelectorAll('svg text')].map(t => t.textContent)")
        assert "left" in texts and "right" in texts and not [t for t in texts if "A better" in t or "B better" in t]
        assert "r0001" in _svg_texts(tab.page, "rlft-reward-plot")  # one version: one bar
        assert tab.page.locator("#rlft-reward-plot svg path[aria-roledescription=bar], "
                                "#rlft-reward-plot svg .mark-rect path").count() >= 1
        time_texts = _svg_texts(tab.page, "rlft-time-plot")
        assert "Judgements over time: pat" in time_texts  # this page's rater first, on their own scale
        ticks = [float(t.replace(",", "")) for t in time_texts if t.replace(",", "").replace(".", "").isdigit()]
        assert ticks and max(ticks) <= 10, time_texts
        clock = [t for t in time_texts if ":" in t and "over time" not in t]
        assert clock and not [t for t in time_texts if t.startswith(".")], time_texts
        headers = tab.page.evaluate("""() => [...document.querySelectorAll('#rlft-raters th')].map(th => {
            const r = document.createRange(); r.selectNodeContents(th); return r.getClientRects().length; })""")
        assert headers and max(headers) == 1, headers  # every header on one line
        _pick(tab.page, "rlft-who", "everyone (303)")
        tab.page.wait_for_function("() => [...document.querySelectorAll('#rlft-time-plot svg text')]"
                                   ".some(t => t.textContent === 'Judgements over time: everyone')")
        store.record_judgement(shas[0], shas[-1], "b", rater="quinn")  # a new rater while the page is open
        tab.page.locator("#rlft-refresh").click()
        _pick(tab.page, "rlft-who", "quinn (1)")
        tab.page.wait_for_function("() => [...document.querySelectorAll('#rlft-time-plot svg text')]"
                                   ".some(t => t.textContent === 'Judgements over time: quinn')")
        assert "quinn" in tab.page.locator("#rlft-raters").inner_text()
        tab.close()
    store.close()


def test_compare_has_its_own_tab_with_a_summary_and_says_when_rows_are_cut(browser, tmp_path, monkeypatch):
    # The compare view was a closed section under 200 thumbnails, cut at 100 rows without saying so, with no
    # summary; the gallery's "Show" box ignored a typed number.
    from ui_helpers import two_run_pool

    import prefs
    import ui.compare

    store = prefs.open_store(home=tmp_path / "compare", seed=0)
    pairs = two_run_pool(store, prompts=12, seeds=5)  # 60 shared prompt + seed pairs
    # An independent judge through the hook: B wins on even seeds by 1, loses on seed 1, ties otherwise.
    delta = {0: 1.0, 1: -1.0, 2: 1.0, 3: 0.0, 4: 1.0}
    oracle = {b.sha256: delta[seed] for _, seed, _, b in pairs} | {a.sha256: 0.0 for _, _, a, _ in pairs}
    monkeypatch.setitem(ui.compare._JUDGES, "oracle", lambda images: oracle)
    with running(store, min_decision_ms=0) as (url, _):
        tab = Page(browser, url).open("ray")
        tab.page.get_by_role("tab", name="Gallery").click()
        tab.page.wait_for_selector(".rlft-grid img")
        assert tab.page.get_by_text("Compare runs").count() == 0
        box = tab.page.locator("#rlft-show input[type=number]")
        box.fill("30")
        box.press("Enter")
        tab.page.wait_for_function("() => document.querySelectorAll('.rlft-card').length === 30")
        tab.page.get_by_role("tab", name="Compare").click()
        tab.page.wait_for_selector("#rlft-compare-summary table")
        summary = tab.page.locator("#rlft-compare-summary")
        assert summary.bounding_box()["y"] < 800  # on screen at once, not below a gallery
        text = summary.inner_text()
        assert "toy + t0001" in text and "60 prompt + seed pairs" in text
        row = [r for r in text.splitlines() if r.startswith("oracle")][0].split("\t")
        assert row[1:4] == ["36", "12", "12"] and row[5] == "+0.400", row  # wins, ties, losses; mean B - A
        assert "Showing the first 50 of 60 pairs" in text
        assert tab.page.locator(".rlft-compare tbody tr").count() == 50
        rows = tab.page.locator("#rlft-compare-rows input")
        rows.fill("60")
        rows.press("Enter")
        tab.page.wait_for_function("() => document.querySelectorAll('.rlft-compare tbody tr').length === 60")
        assert "Showing the first" not in summary.inner_text()
        tab.close()
    store.close()


def test_the_first_gallery_open_finds_the_reward_loaded(browser, tmp_path, monkeypatch):
    # The first open loaded torch and the reward model on the request (14.3 s on 320 images; 0.56 s warm).
    # Now the server loads it in the background from the start; a gallery opened before it is ready ranks by
    # Bradley-Terry at once and says so.
    import threading

    from ui_helpers import toy_pool

    import prefs
    import reward.scorer
    import ui.scoring

    release = threading.Event()
    loads = []

    def slow_make_scorer(store, path):  # stands in for importing torch and loading the reward model
        loads.append(path)
        release.wait(60)
        return lambda images: ([float(len(im.prompt)) for im in images], None)

    monkeypatch.setattr(ui.scoring, "reward_versions", lambda: [{"id": "r0001", "path": "r0001"}])
    monkeypatch.setattr(reward.scorer, "make_scorer", slow_make_scorer)
    store = prefs.open_store(home=tmp_path / "gallery", seed=0)
    toy_pool(store, prompts=3, per_prompt=3)
    with running(store, min_decision_ms=0) as (url, app):
        assert loads == ["r0001"]  # loading began with the server, before any page asked
        tab = Page(browser, url).open("sam")
        tab.page.get_by_role("tab", name="Gallery").click()
        tab.page.wait_for_selector(".rlft-grid img")
        assert "still loading" in tab.page.get_by_text("ranked by").inner_text()
        release.set()
        assert app.scores.reward_scorer(wait=60)[1] is not None  # the background load finishes
        tab.page.get_by_role("tab", name="Rate").click()
        tab.page.get_by_role("tab", name="Gallery").click()
        tab.page.wait_for_function("() => document.body.innerText.includes('ranked by reward r0001')")
        assert loads == ["r0001"]  # loaded once
        tab.close()
    store.close()
