"""Rating-server speed: 20 simulated raters vote concurrently through `gradio_client` against one server.

Target (issue 5): server time from a vote's arrival to the next pair being ready, p95 <= 100 ms; no vote
lost or duplicated. The server runs in this process (its handler timings are read directly); the raters
run in a child process, one thread and one `gradio_client.Client` each, thinking 0.3-0.8 s per pair
(faster than any person; the double-click guard of 250 ms stays on). Afterwards every vote a rater saw
accepted must be in the database exactly once, with its outcome.

    .venv/bin/python bench/bench_ui.py [--raters 20] [--votes 40] [--images 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
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


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else None


def rater(url, name, votes, seed, out):
    from gradio_client import Client

    rng = random.Random(seed)
    c = Client(url, verbose=False)
    _, _, token, status, _ = c.predict(name, api_name="/start")
    for _ in range(votes):
        if not token:
            break
        time.sleep(rng.uniform(0.3, 0.8))
        side = rng.choice(SIDES)
        t0 = time.perf_counter()
        res = c.predict(token, name, api_name=f"/vote_{side}")
        rtt = (time.perf_counter() - t0) * 1000
        ok = "⚠" not in res[3]
        out.append({"rater": name, "token": token, "outcome": OUTCOME[side], "ok": ok, "rtt_ms": rtt,
                    "status": res[3] if not ok else ""})
        token = res[2]


def clients(url, raters, votes, conn):
    records: list[dict] = []
    threads = [threading.Thread(target=rater, args=(url, f"sim{k:02d}", votes, k, records)) for k in range(raters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conn.send(records)
    conn.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raters", type=int, default=20)
    ap.add_argument("--votes", type=int, default=40, help="votes per rater")
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args(argv)

    home = tempfile.mkdtemp(prefix="rlft-bench-ui-")
    os.environ.update(RLFT_HOME=home, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    sys.path.insert(0, str(ROOT / "tests"))
    from ui_helpers import toy_pool

    import prefs
    from ui.app import AppConfig
    from ui.server import ServeOptions, serve, stop

    store = prefs.open_store()
    toy_pool(store, prompts=args.images // 5, per_prompt=5)
    demo, url, app = serve(store, ServeOptions(port=0, quiet=True), AppConfig(), block=False)
    try:
        parent, child = mp.get_context("spawn").Pipe(duplex=False)
        proc = mp.get_context("spawn").Process(target=clients, args=(url, args.raters, args.votes, child))
        t0 = time.perf_counter()
        proc.start()
        records = parent.recv()
        proc.join()
        wall = time.perf_counter() - t0
        server_ms = list(app.timings)
    finally:
        stop(demo, app)

    accepted = [r for r in records if r["ok"]]
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

    result = {
        "benchmark": "ui: 20 simulated raters voting concurrently through gradio_client",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"raters": args.raters, "votes_per_rater": args.votes, "images": args.images,
                     "think_s": [0.3, 0.8], "backend": "sqlite"},
        "votes_sent": len(records), "votes_accepted": len(accepted),
        "refused": [r["status"] for r in records if not r["ok"]][:10],
        "rows_in_db": len(rows), "lost": len(lost), "duplicated": len(duplicated), "wrong_outcome": len(wrong),
        "unexpected_rows": len(unexpected),
        "server_ms_vote_to_next_pair": {"n": len(server_ms), "p50": pct(server_ms, 50), "p95": pct(server_ms, 95),
                                        "p99": pct(server_ms, 99), "max": max(server_ms) if server_ms else None,
                                        "mean": statistics.fmean(server_ms) if server_ms else None},
        "client_round_trip_ms": {"p50": pct([r["rtt_ms"] for r in records], 50),
                                 "p95": pct([r["rtt_ms"] for r in records], 95)},
        "throughput_votes_per_s": len(accepted) / wall,
        "target": {"server_p95_ms": 100, "lost": 0, "duplicated": 0},
    }
    p95 = result["server_ms_vote_to_next_pair"]["p95"]
    result["pass"] = bool(p95 is not None and p95 <= 100 and not lost and not duplicated and not wrong and not unexpected)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("votes_accepted", "lost", "duplicated", "server_ms_vote_to_next_pair",
                                             "client_round_trip_ms", "pass")}, indent=1))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
