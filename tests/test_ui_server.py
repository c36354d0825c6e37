"""The server over HTTP without a browser: image route, blocked file routes, auth gate, API votes,
gallery/compare/progress data, and the `rlft ui` command line."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner
from ui_helpers import module_pool, running

import prefs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with module_pool(tmp_path_factory, "uihome", prompts=3, per_prompt=3) as s:
        yield s


@pytest.fixture(scope="module")
def server(store):
    with running(store, min_decision_ms=0) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def auth_server(store):
    with running(store, auth=[("alice", "pw-a"), ("bob", "pw-b")], min_decision_ms=0) as (url, app):
        yield url, app


def some_sha(store):
    return next(iter(store.images())).sha256


def test_pool_images_are_served_by_hash(server, store):
    url, _ = server
    sha = some_sha(store)
    r = httpx.get(f"{url}rlft/img/{sha}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == store.image_path(sha).read_bytes()
    assert "immutable" in r.headers["cache-control"]


@pytest.mark.parametrize("path", [
    "rlft/img/" + "0" * 64,  # not in the pool
    "rlft/img/../prefs.sqlite",
    "rlft/img/..%2F..%2Fprefs.sqlite",
    "rlft/img/%2Fetc%2Fpasswd",
    "rlft/img//etc/passwd",
    "gradio_api/file=/etc/passwd",
    "gradio_api/file=../../../../etc/passwd",
    "file=/etc/passwd",
    "gradio_api/file/etc/passwd",
    "gradio_api/proxy=http://example.com/",
])
def test_nothing_but_pool_images_is_served(server, store, path):
    url, _ = server
    r = httpx.get(url + path)
    assert r.status_code in (404, 405), (path, r.status_code)
    assert b"root:" not in r.content and b"SQLite" not in r.content


def test_pool_and_database_files_are_not_reachable_by_path(server, store):
    url, _ = server
    sha = some_sha(store)
    for p in (store.image_path(sha), store.pool_dir.parent / "prefs.sqlite"):
        for route in ("gradio_api/file=", "file="):
            assert httpx.get(f"{url}{route}{p}").status_code == 404


def test_auth_gates_every_route(auth_server, store):
    url, _ = auth_server
    sha = some_sha(store)
    assert httpx.get(url).status_code == 200  # the login page
    for path in (f"rlft/img/{sha}", "gradio_api/info", "config", "gradio_api/config", "gradio_api/queue/data",
                 "gradio_api/heartbeat/abc", "gradio_api/startup-events", "gradio_api/openapi.json",
                 "gradio_api/file=/etc/passwd", "gradio_api/upload", "monitoring"):
        r = httpx.get(url + path)
        assert r.status_code in (401, 404), (path, r.status_code)
        assert r.status_code != 200
    assert httpx.post(f"{url}gradio_api/queue/join", json={}).status_code == 401
    assert httpx.post(f"{url}login", data={"username": "alice", "password": "wrong"}).status_code == 400
    with httpx.Client() as c:
        assert c.post(f"{url}login", data={"username": "alice", "password": "pw-a"}).status_code == 200
        assert c.get(f"{url}rlft/img/{sha}").status_code == 200
        assert c.get(f"{url}gradio_api/info").status_code == 200


def test_a_pool_file_swapped_for_a_symlink_is_not_followed(tmp_path):
    # The route once cached the resolved path after the first request: swapping the pool file for a symlink then
    # made the same URL serve whatever the link pointed at. Every request now walks the pool without following links.
    from ui_helpers import toy_pool

    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:secret")
    with prefs.open_store(home=tmp_path / "h", seed=0) as s:
        sha = toy_pool(s, prompts=1, per_prompt=2)[0]
        with running(s, min_decision_ms=0) as (url, _):
            assert httpx.get(f"{url}rlft/img/{sha}").status_code == 200  # served once: the path is known now
            pool_file = s.image_path(sha)
            pool_file.unlink()
            pool_file.symlink_to(secret)
            r = httpx.get(f"{url}rlft/img/{sha}")
            assert r.status_code == 404 and b"root:" not in r.content
            pool_file.unlink()
            pool_file.parent.rename(pool_file.parent.with_name(pool_file.parent.name + "-moved"))
            pool_file.parent.symlink_to(pool_file.parent.with_name(pool_file.parent.name + "-moved"))
            assert httpx.get(f"{url}rlft/img/{sha}").status_code == 404  # a linked folder is not followed either


def test_the_login_page_does_not_describe_the_api(auth_server):
    url, _ = auth_server
    page = httpx.get(url)
    assert page.status_code == 200 and "gradio_config" in page.text  # the login page itself still works
    assert "window.gradio_api_info = null;" in page.text
    for secret in ("api_name", "code_snippets", "/vote_left", "gradio_client"):
        assert secret not in page.text, secret
    assert httpx.get(f"{url}gradio_api/info").status_code == 401
    with httpx.Client() as c:  # after login the page is Gradio's own, the API description included
        assert c.post(f"{url}login", data={"username": "alice", "password": "pw-a"}).status_code == 200
        assert "/vote_left" in c.get(url).text


def test_api_votes_and_idempotence(server, store):
    from gradio_client import Client

    url, app = server
    c = Client(url, verbose=False)
    _, _, tok, status, _ = c.predict("carol", api_name="/start")
    assert "carol" in status and len(tok) == 32
    out = c.predict(tok, "carol", api_name="/vote_right")
    assert out[2] != tok and "<b>1</b> vote" in out[3] and "right better, saved" in out[3]
    again = c.predict(tok, "carol", api_name="/vote_right")  # double submit of the same pair
    assert "Already recorded" in again[3]
    rows = [j for j in store.judgements() if j.rater == "carol"]
    assert [(j.client_vote_id, j.outcome) for j in rows] == [(tok, "b")]
    undone = c.predict("carol", api_name="/undo")
    assert "Undid" in undone[3] and not [j for j in store.judgements() if j.rater == "carol"]
    assert app.timings  # vote -> next pair timings are recorded


def test_api_votes_without_a_name_or_from_before_a_restart_say_so(server, store, capfd):
    # A vote with no rater answered "This page is older than the server: reload it." with a traceback; a vote
    # for a pair of an earlier server process is refused in plain words, and nothing is written either way.
    from gradio_client import Client

    url, _ = server
    before = len(list(store.judgements()))
    out = Client(url, verbose=False).predict("", "", api_name="/vote_left")
    assert "Type your name first" in out[3] and "not recorded" in out[3] and not out[2]
    out = Client(url, verbose=False).predict("0" * 32, "dora", api_name="/vote_left")  # a new session: no pair yet
    assert "before the server restarted" in out[3] and "not recorded" in out[3] and len(out[2]) == 32
    assert len(list(store.judgements())) == before
    assert "Traceback" not in capfd.readouterr().err


def test_a_port_in_use_names_the_port_flag(server, rlft_home):
    # Gradio's own message named GRADIO_SERVER_PORT and `server_port`, which a person never set.
    from ui_helpers import toy_pool

    from rlft.cli import main

    with prefs.open_store() as s:
        toy_pool(s, prompts=1, per_prompt=2)
    port = int(server[0].rstrip("/").rsplit(":", 1)[1])
    r = CliRunner().invoke(main, ["ui", "--no-generate", "--port", str(port)])
    assert r.exit_code == 2 and r.output.startswith("Error:") and r.output.count("\n") == 1, r.output
    assert f"port {port}" in r.output and "--port 0" in r.output
    assert "GRADIO" not in r.output and "server_port" not in r.output


def test_gallery_compare_and_progress_handlers(store):
    from ui.app import AppConfig, RatingApp

    app = RatingApp(store, AppConfig())
    try:
        shas = [im.sha256 for im in store.images()]
        store.record_judgement(shas[0], shas[1], "a", rater="dave")
        store.record_judgement(shas[0], shas[2], "a", rater="dave")
        grid, note = app.gallery(None, "", 100)
        assert "Bradley-Terry" in note and grid.index(shas[0]) < grid.index(shas[1])
        assert "2 judged" in grid
        summary, outcomes, raters, over_time, who, rewards = app.progress()
        assert "judgements" in summary and "<td>dave</td>" in raters
        assert int(outcomes.loc[outcomes["outcome"] == "left", "count"].iloc[0]) >= 2
        assert len(over_time.value["data"]) >= 1 and rewards.empty
    finally:
        app.close()


def test_compare_runs_matches_prompt_and_seed():
    from types import SimpleNamespace as NS

    from ui import gallery

    def im(i, prompt, seed, model, lora=None):
        return NS(id=i, sha256=f"{i:064x}", prompt=prompt, seed=seed, model=model, lora=lora, n_judgements=0,
                  broken_at=None, width=64, height=64)

    images = [im(1, "p", 0, "toy"), im(2, "p", 0, "toy", "t0001"), im(3, "p", 1, "toy"), im(4, "q", 0, "toy", "t0001")]
    assert gallery.run_choices(images) == ["toy", "toy + t0001"]
    rows = gallery.compare(images, {images[1].sha256: 1.0}, "toy", "toy + t0001")
    assert [(p, s, a.id, b.id, sb) for p, s, a, b, sa, sb in rows] == [("p", 0, 1, 2, 1.0)]
    assert gallery.default_runs(gallery.run_choices(images), images) == ("toy", "toy + t0001")
    ranked = gallery.ranked(images, {images[1].sha256: 1.0, images[0].sha256: -1.0}, search="P")
    assert [r["image"].id for r in ranked][:2] == [2, 1]


def test_exposure_warning_and_auth_parsing():
    from prefs.errors import UserError
    from ui.security import exposure_warning
    from ui.server import parse_auth

    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("::1", None) is None
    assert "without --auth" in exposure_warning("0.0.0.0", None)
    assert exposure_warning("0.0.0.0", [("a", "b")]) is None
    assert parse_auth(["a:b:c", "x:y"]) == [("a", "b:c"), ("x", "y")]
    with pytest.raises(UserError):
        parse_auth(["nopass"])


def test_app_config_parses_the_strategy_once_for_every_session(store, monkeypatch):
    from prefs_util import count_strategy_parses

    from ui.app import AppConfig, RatingApp

    parses = count_strategy_parses(monkeypatch)
    app = RatingApp(store, AppConfig(strategy="uncertain:0.5,same_prompt:0.5"))
    try:
        assert app._scorer == app.scores.pair_scorer  # a scored strategy in the mix: sessions get the reward's scorer
        sessions = [app.new_session(name) for name in ("erin", "frank")]
        assert all(s.strategy is app.config.strategy for s in sessions) and len(parses) == 1
    finally:
        app.close()


def test_cli_bad_input_is_one_line():
    from rlft.cli import main

    for args in (["ui", "--auth", "alice"], ["ui", "--strategy", "nope"], ["ui", "--port", "70000"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, (args, r.output)
        assert r.output.startswith("Error:") and r.output.count("\n") == 1, r.output


def test_toy_prompts_leave_something_open():
    from rlft.cli.ui import toy_prompts

    prompts = toy_prompts(20)
    assert len(set(prompts)) == 20 and prompts == toy_prompts(20)


def test_first_pool_generation_resumes(rlft_home, monkeypatch):
    """Generation is stubbed (no diffusion in tests): the plan, the marker and the resume are what is tested."""
    import random

    import rlft.models.generate
    import rlft.models.pipeline
    from rlft.cli.ui import PLAN_NAME, SEEDS_PER_PROMPT, ensure_pool
    from rlft.toy.world import draw, random_scene

    calls = []

    def fake_generate(pipe, prompts, n, seed, store, **kw):
        calls.append((prompts[0], seed))
        if len(calls) == 2:
            raise KeyboardInterrupt  # cut off mid-way
        for i in range(n):
            store.add_image(draw(random_scene(random.Random(seed + i)), seed + i), prompt=prompts[0], seed=seed + i,
                            model="toy")

    monkeypatch.setattr(rlft.models.generate, "generate", fake_generate)
    monkeypatch.setattr(rlft.models.pipeline, "load_pipeline", lambda spec: object())
    store = prefs.open_store()
    with pytest.raises(KeyboardInterrupt):
        ensure_pool(store, 3 * SEEDS_PER_PROMPT)
    assert (rlft_home / PLAN_NAME).exists() and store.count_images() == SEEDS_PER_PROMPT
    assert ensure_pool(store, 3 * SEEDS_PER_PROMPT) == 2 * SEEDS_PER_PROMPT  # resumes with the two missing prompts
    assert not (rlft_home / PLAN_NAME).exists() and store.count_images() == 3 * SEEDS_PER_PROMPT
    assert ensure_pool(store, 100) == 0  # a pool exists: nothing generated
    store.close()


def test_time_axis_and_compare_summary_by_hand():
    import pandas as pd

    from ui.compare import summarize
    from ui.progress import time_axis

    burst = pd.Series(pd.to_datetime(["2026-01-01 10:00:00.100", "2026-01-01 10:00:00.900"]))
    fmt, (lo, hi), angle = time_axis(burst)  # a burst within a second: ten minutes around it, labelled HH:MM
    assert (fmt, hi - lo, angle) == ("%H:%M", 600, 0.0)
    assert abs((lo + hi) / 2 - pd.Timestamp("2026-01-01 10:00:00.500").value / 1e9) < 1e-6
    assert time_axis(pd.Series(pd.to_datetime(["2026-01-01 10:00", "2026-01-01 15:00"])))[0] == "%H:%M"
    assert time_axis(pd.Series(pd.to_datetime(["2026-01-01", "2026-01-03"])))[::2] == ("%b %d %H:%M", -30.0)
    assert time_axis(pd.Series(pd.to_datetime(["2026-01-01", "2026-02-01"])))[0] == "%b %d"

    def im(sha):
        from types import SimpleNamespace

        return SimpleNamespace(sha256=sha)

    pairs = [("p", s, im(f"a{s}"), im(f"b{s}")) for s in range(5)]
    scores = {"a0": 0.0, "b0": 0.5, "a1": 0.0, "b1": -0.5, "a2": 0.0, "b2": 0.04, "a3": 1.0, "b3": 1.2}  # a4, b4 unscored
    v = summarize(pairs, "judge", scores)
    assert (v.wins, v.ties, v.losses, v.unscored, v.scored) == (2, 1, 1, 1, 4)
    assert abs(v.mean_diff - (0.5 - 0.5 + 0.04 + 0.2) / 4) < 1e-12
