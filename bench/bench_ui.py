"""Rating-server speed, in the browser and on the server: key -> next pair painted, with 1 and with 20 raters.

Two phases on one server (in this process, on 127.0.0.1, a drawn toy-world pool):

1. one rater: a person in Debian's Chromium (Playwright) presses vote keys; the page itself times each key press
   to the moment the next pair is painted (its token changed, both images decoded, two animation frames later);
2. twenty raters: a browser rater as above, plus 19 simulated raters voting concurrently from a child process
   (a thread each, with its own session), each vote one HTTP POST to the vote endpoint, as the page sends it.

Every rater thinks 0.3-0.8 s per pair (faster than any person; the double-click guard of 250 ms stays on).
Beside the browser time, the server's own time from a vote's arrival to the next pair being ready. Targets:
browser p95 <= 150 ms for one rater and <= 300 ms with 20; server p95 <= 100 ms; afterwards every vote a
rater saw accepted must be in the database exactly once, with its outcome. Writes bench/results/ui.json.

    .venv/bin/python bench/bench_ui.py [--raters 20] [--votes 60] [--images 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "ui.json"
SIDES = ("left", "right", "tie", "both_bad", "skip")
OUTCOME = {"left": "a", "right": "b", "tie": "tie", "both_bad": "both_bad", "skip": "skip"}
KEYS = {"1": "a", "2": "b", "3": "tie", "4": "both_bad", "s": "skip"}
THINK_S = (0.3, 0.8)
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TARGETS = {"browser_p95_ms_1_rater": 150, "browser_p95_ms_20_raters": 300, "server_p95_ms": 100}
VOTE_TIMEOUT_MS = 20_000  # one vote's answer, at the most (a bound, not a target)

# In the page, before Gradio: a vote key's press time, and the moment the next pair is painted.
PAINT_PROBE = """
window.__paint = { lat: [], t0: null, old: null };
window.addEventListener("keydown", (e) => {
  if (!"1234s".includes(e.key) || e.repeat) return;
  const p = document.querySelector(".rlft-pair[data-token]");
  window.__paint.t0 = performance.now();
  window.__paint.old = p && p.dataset.token;
}, true);
new MutationObserver(() => {
  const r = window.__paint;
  if (r.t0 === null) return;
  const p = document.querySelector(".rlft-pair[data-token]");
  if (!p || p.dataset.token === r.old) return;
  const t0 = r.t0;
  r.t0 = null;
  const imgs = [...p.querySelectorAll("img")];
  Promise.all(imgs.map((i) => i.decode().catch(() => null))).then(() =>
    requestAnimationFrame(() => requestAnimationFrame(() => r.lat.push(performance.now() - t0))));
}).observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-token"] });
"""


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else None


def summary(xs) -> dict:
    return {"n": len(xs), "p50": pct(xs, 50), "p95": pct(xs, 95), "p99": pct(xs, 99),
            "max": max(xs) if xs else None, "mean": statistics.fmean(xs) if xs else None}


# -- simulated raters (child process) --------------------------------------------------------------------
def api_rater(url, name, votes, seed, out):
    """Votes as the page sends them: one POST per vote to /gradio_api/run/vote_<side> in this rater's session
    (a light client, so 19 of them leave the shared CPUs to the server, as 19 other machines would)."""
    import uuid

    import httpx

    rng = random.Random(seed)
    session = uuid.uuid4().hex[:11]
    with httpx.Client(base_url=url + "gradio_api/run/", timeout=60) as c:
        def call(endpoint, *data):  # outputs: session state (kept server-side), pair, prompt, token, status
            r = c.post(endpoint, json={"data": [None, *data], "session_hash": session})
            r.raise_for_status()
            return r.json()["data"]

        token = call("start", name)[3]
        for _ in range(votes):
            if not token:
                break
            time.sleep(rng.uniform(*THINK_S))
            side = rng.choice(SIDES)
            t0 = time.perf_counter()
            res = call(f"vote_{side}", token, name)
            rtt = (time.perf_counter() - t0) * 1000
            ok = "rlft-warn" not in res[4]
            out.append({"rater": name, "token": token, "outcome": OUTCOME[side], "ok": ok, "rtt_ms": rtt,
                        "status": res[4] if not ok else ""})
            token = res[3]


def api_raters(url, raters, votes, conn):
    records: list[dict] = []
    threads = [threading.Thread(target=api_rater, args=(url, f"sim{k:02d}", votes, k, records)) for k in range(raters)]
    for t in threads:
        t.start()
    conn.send("started")
    for t in threads:
        t.join()
    conn.send(records)
    conn.close()


# -- the browser rater -----------------------------------------------------------------------------------
def browser_rater(playwright, url: str, name: str, votes: int, seed: int) -> tuple[list[float], list[dict]]:
    """(key -> painted ms per vote, [{token, outcome}] of the votes the page showed as saved)."""
    rng = random.Random(seed)
    profile = tempfile.mkdtemp(prefix="rlft-bench-chromium-")
    ctx = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                        viewport={"width": 1280, "height": 820})
    try:
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.set_default_timeout(VOTE_TIMEOUT_MS)
        page.add_init_script(PAINT_PROBE)
        page.goto(url, wait_until="domcontentloaded")
        box = page.locator("#rlft-name textarea, #rlft-name input").first
        box.fill(name)
        box.press("Enter")
        page.wait_for_selector(".rlft-pair[data-token]")
        sent = []
        for _ in range(votes):
            page.wait_for_timeout(rng.uniform(*THINK_S) * 1000)
            token = page.locator(".rlft-pair").get_attribute("data-token")
            done = page.evaluate("() => window.__paint.lat.length")
            key = rng.choice(list(KEYS))
            page.keyboard.press(key)
            # Painted, or refused (the pair stays: a warning says why; not timed, not counted as saved).
            page.wait_for_function("([n, old]) => window.__paint.lat.length > n || (document.querySelector("
                                   "'#rlft-status .rlft-warn') && document.querySelector('.rlft-pair').dataset.token "
                                   "=== old)", arg=[done, token])
            if page.evaluate("n => window.__paint.lat.length > n", done):
                sent.append({"token": token, "outcome": KEYS[key]})
        return list(page.evaluate("() => window.__paint.lat")), sent
    finally:
        ctx.close()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raters", type=int, default=20, help="raters in the second phase (one of them in the browser)")
    ap.add_argument("--votes", type=int, default=60, help="votes per rater and phase")
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing (apt-get install chromium): the browser times need it")

    home = tempfile.mkdtemp(prefix="rlft-bench-ui-")
    os.environ.update(RLFT_HOME=home, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    sys.path.insert(0, str(ROOT / "tests"))
    from playwright.sync_api import sync_playwright
    from ui_helpers import toy_pool

    import prefs
    from ui.app import AppConfig
    from ui.server import ServeOptions, serve, stop

    store = prefs.open_store()
    toy_pool(store, prompts=args.images // 5, per_prompt=5)
    demo, url, app = serve(store, ServeOptions(port=0, quiet=True), AppConfig(), block=False)
    load_before = os.getloadavg()
    phases = {}
    records: list[dict] = []
    browser_votes: list[dict] = []
    try:
        with sync_playwright() as pw:
            # Phase 1: one rater, in the browser.
            app.timings.clear()
            lat, sent = browser_rater(pw, url, "person1", args.votes, seed=1)
            phases["1_rater"] = {"browser_ms_key_to_painted": summary(lat), "server_ms_vote_to_next_pair": summary(list(app.timings))}
            browser_votes += [dict(v, rater="person1") for v in sent]
            # Phase 2: the browser rater among 19 simulated ones.
            app.timings.clear()
            parent, child = mp.get_context("spawn").Pipe(duplex=False)
            proc = mp.get_context("spawn").Process(target=api_raters, args=(url, args.raters - 1, args.votes, child))
            t0 = time.perf_counter()
            proc.start()
            parent.recv()  # the simulated raters are voting
            lat, sent = browser_rater(pw, url, "person2", args.votes, seed=2)
            browser_votes += [dict(v, rater="person2") for v in sent]
            records = parent.recv()
            proc.join()
            wall = time.perf_counter() - t0
            phases[f"{args.raters}_raters"] = {
                "browser_ms_key_to_painted": summary(lat), "server_ms_vote_to_next_pair": summary(list(app.timings)),
                "api_round_trip_ms": summary([r["rtt_ms"] for r in records]),
                "throughput_votes_per_s": (len([r for r in records if r["ok"]]) + len(sent)) / wall}
    finally:
        stop(demo, app)

    accepted = [r for r in records if r["ok"]] + browser_votes
    rows = list(store.judgements(include_undone=True))
    by_id: dict[str, list] = {}
    for j in rows:
        by_id.setdefault(j.client_vote_id, []).append(j)
    lost = [r for r in accepted if r["token"] not in by_id]
    wrong = [r for r in accepted if r["token"] in by_id and (by_id[r["token"]][0].outcome, by_id[r["token"]][0].rater)
             != (r["outcome"], r["rater"])]
    duplicated = [k for k, v in by_id.items() if len(v) > 1]
    unexpected = [k for k in by_id if k not in {r["token"] for r in accepted}]
    store.close()
    shutil.rmtree(home, ignore_errors=True)

    one, many = phases["1_rater"], phases[f"{args.raters}_raters"]
    result = {
        "benchmark": "ui: key -> next pair painted in Chromium (1 rater; 1 of 20 raters, 19 posting votes over HTTP), "
                     "beside the server's vote -> next pair time",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1_5_15_before": [round(x, 2) for x in load_before],
                    "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"raters": args.raters, "votes_per_rater_and_phase": args.votes, "images": args.images,
                     "think_s": list(THINK_S), "backend": "sqlite", "browser": CHROMIUM + " (headless)"},
        "phases": phases,
        "votes_accepted": len(accepted), "refused": [r["status"] for r in records if not r["ok"]][:10],
        "rows_in_db": len(rows), "lost": len(lost), "duplicated": len(duplicated), "wrong_outcome": len(wrong),
        "unexpected_rows": len(unexpected),
        "target": {**TARGETS, "lost": 0, "duplicated": 0},
    }
    checks = [(one["browser_ms_key_to_painted"]["p95"], TARGETS["browser_p95_ms_1_rater"]),
              (many["browser_ms_key_to_painted"]["p95"], TARGETS["browser_p95_ms_20_raters"]),
              (many["server_ms_vote_to_next_pair"]["p95"], TARGETS["server_p95_ms"])]
    result["pass"] = bool(all(v is not None and v <= t for v, t in checks)
                          and not lost and not duplicated and not wrong and not unexpected)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    brief = {k: {m: {q: round(v, 1) for q, v in s.items() if q in ("n", "p50", "p95")} for m, s in ph.items()
                 if isinstance(s, dict)} for k, ph in phases.items()}
    print(json.dumps({"phases": brief, "lost": len(lost), "duplicated": len(duplicated), "pass": result["pass"],
                      "load": result["machine"]["load_average_1_5_15_before"]}, indent=1))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
