"""Screenshots of the rating app for the docs, on a desktop and on a phone: docs/ui-rate.png,
ui-rate-phone.png, ui-gallery.png, ui-compare.png, ui-progress.png.

A temp home gets a drawn toy-world pool (a base run and a tuned run on the same prompts and seeds, so Compare
has something to show), a few hundred judgements from two simulated raters and a small reward model trained on
them (toy CLIP); then Debian's Chromium visits each tab, 1280x820 and 390x844 (a phone).

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
DESKTOP = {"viewport": {"width": 1280, "height": 820}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
NAMES = ("ui-rate.png", "ui-rate-phone.png", "ui-gallery.png", "ui-compare.png", "ui-progress.png")


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
    for name, n in (("alice", 40), ("bob", 240)):
        for _ in range(n):
            (a, _), (b, _) = rng.sample(images, 2)
            wa, wb = warm[a.sha256], warm[b.sha256]
            outcome = "tie" if wa == wb and rng.random() < 0.3 else ("a" if (wa, rng.random()) > (wb, 0.5) else "b")
            store.record_judgement(a, b, outcome, rater=name, decision_ms=rng.randint(600, 4000),
                                   strategy="same_prompt")


def train_reward(store):
    import reward
    from reward.fit import FitConfig
    from reward.training import RewardTrainConfig

    reward.train(store, RewardTrainConfig(fit=FitConfig(ensemble=2, steps=100)), progress=False)


def page_for(playwright, device):
    profile = tempfile.mkdtemp(prefix="rlft-chromium-")
    ctx = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS, **device)
    page = ctx.pages[0] if ctx.pages else ctx.new_page()
    page.set_default_timeout(60_000)
    return ctx, page, profile


def rate_and_vote(page, url):
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector(".rlft-pair[data-token]")
    page.wait_for_function("() => [...document.querySelectorAll('.rlft-pair img')].every(i => i.complete)")
    page.wait_for_timeout(400)
    old = page.locator(".rlft-pair").get_attribute("data-token")
    page.keyboard.press("1")  # the screenshot shows the confirmation of a vote
    page.wait_for_function("old => document.querySelector('.rlft-pair').dataset.token !== old", arg=old)
    page.wait_for_function("() => [...document.querySelectorAll('.rlft-pair img')].every(i => i.complete)")
    page.wait_for_timeout(300)


def progress(page):
    page.get_by_role("tab", name="Progress").click()
    page.wait_for_function("() => document.querySelectorAll('#rlft-time-plot svg text').length > 3 && "
                           "document.querySelectorAll('#rlft-reward-plot svg text').length > 3")
    page.wait_for_timeout(800)  # the plots finish drawing


def main() -> int:
    home = tempfile.mkdtemp(prefix="rlft-shots-")
    os.environ.update(RLFT_HOME=home, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    from playwright.sync_api import sync_playwright

    import prefs
    from ui.app import AppConfig
    from ui.server import ServeOptions, serve, stop

    store = prefs.open_store(seed=0)
    fill(store, random.Random(0))
    train_reward(store)
    demo, url, app = serve(store, ServeOptions(port=0, quiet=True), AppConfig(rater="alice"), block=False)
    app.scores.reward_scorer(wait=None)  # loaded before the first gallery, as a person would find it
    profiles = []
    DOCS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            ctx, page, profile = page_for(p, DESKTOP)
            profiles.append(profile)
            rate_and_vote(page, url)
            page.screenshot(path=str(DOCS / "ui-rate.png"))
            page.get_by_role("tab", name="Gallery").click()
            page.wait_for_selector(".rlft-grid img")
            page.wait_for_function("() => [...document.querySelectorAll('.rlft-grid img')].slice(0, 24)"
                                   ".every(i => i.complete)")
            page.screenshot(path=str(DOCS / "ui-gallery.png"))
            page.get_by_role("tab", name="Compare").click()
            page.wait_for_selector(".rlft-compare img")
            page.wait_for_timeout(600)
            page.screenshot(path=str(DOCS / "ui-compare.png"))
            progress(page)
            page.screenshot(path=str(DOCS / "ui-progress.png"), full_page=True)
            ctx.close()

            ctx, page, profile = page_for(p, PHONE)
            profiles.append(profile)
            rate_and_vote(page, url)
            page.screenshot(path=str(DOCS / "ui-rate-phone.png"))
            ctx.close()
    finally:
        stop(demo, app)
        store.close()
        for profile in profiles:
            shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    print("wrote", ", ".join(str(DOCS / n) for n in NAMES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
