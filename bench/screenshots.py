"""Screenshots of the Rate, Gallery and Progress tabs for the docs: docs/ui-rate.png, ui-gallery.png,
ui-progress.png.

A temp home gets a drawn toy-world pool (two "runs", so compare-runs has something to show) and a few
hundred judgements from two simulated raters; then Debian's Chromium visits each tab.

    .venv/bin/python bench/screenshots.py
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def fill(store, rng):
    """A pool of drawn toy images from two runs and judgements favouring warm colours."""
    from rlft.toy.world import WARM_COLORS, caption, draw, perturb, random_plan, random_scene

    images = []
    for j in range(12):
        scene = random_scene(rng)
        text = caption(scene, random_plan(rng, 0.5))
        for seed in range(4):
            for lora in (None, "t0001"):
                s = scene if lora is None else perturb(scene, "color", rng)  # the "trained" run drifts in colour
                img = store.add_image(draw(s, seed * 7 + j), prompt=text, seed=seed, model="toy", lora=lora)
                images.append((img, s))
    warm = {img.sha256: (s.color in WARM_COLORS) for img, s in images}
    for name in ("alice", "bob"):
        for _ in range(120):
            (a, _), (b, _) = rng.sample(images, 2)
            wa, wb = warm[a.sha256], warm[b.sha256]
            outcome = "tie" if wa == wb and rng.random() < 0.3 else ("a" if (wa, rng.random()) > (wb, 0.5) else "b")
            store.record_judgement(a, b, outcome, rater=name, decision_ms=rng.randint(600, 4000),
                                    strategy="same_prompt")


def main() -> int:
    home = tempfile.mkdtemp(prefix="rlft-shots-")
    os.environ.update(RLFT_HOME=home, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    from playwright.sync_api import sync_playwright

    import prefs
    from ui.app import AppConfig
    from ui.server import ServeOptions, serve, stop

    store = prefs.open_store(seed=0)
    fill(store, random.Random(0))
    demo, url, app = serve(store, ServeOptions(port=0, quiet=True), AppConfig(rater="alice"), block=False)
    profile = tempfile.mkdtemp(prefix="rlft-chromium-")
    DOCS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                       viewport={"width": 1280, "height": 820})
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.set_default_timeout(20_000)
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector(".rlft-pair[data-token]")
            page.wait_for_function("() => [...document.querySelectorAll('.rlft-pair img')].every(i => i.complete)")
            page.screenshot(path=str(DOCS / "ui-rate.png"))
            page.get_by_role("tab", name="Gallery").click()
            page.wait_for_selector(".rlft-grid img")
            page.get_by_text("Compare runs").click()
            page.click("#rlft-compare")
            page.wait_for_selector(".rlft-compare img")
            page.get_by_role("tab", name="Gallery").scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            page.screenshot(path=str(DOCS / "ui-gallery.png"))
            page.get_by_role("tab", name="Progress").click()
            page.wait_for_selector("#rlft-status", state="attached")
            page.wait_for_timeout(2500)  # the plots draw after their data arrives
            page.screenshot(path=str(DOCS / "ui-progress.png"), full_page=True)
            ctx.close()
    finally:
        stop(demo, app)
        store.close()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    print("wrote", ", ".join(str(DOCS / n) for n in ("ui-rate.png", "ui-gallery.png", "ui-progress.png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
