"""`rlft ui`: the rating app. On first start with an empty pool, it generates one on the toy world.

The first pool is a fixed plan of toy-world prompts (captions that leave some attributes open, so there
is something to judge) times a few seeds, so `same_prompt` pairs exist. Generation adds each image to the
pool as it is written; an interrupted first start resumes with the images still missing.
"""

from __future__ import annotations

import json
import os
import random
import sys

import click

from rlft.cli.params import STRATEGY

SEEDS_PER_PROMPT = 4  # several images per prompt: pairs of one prompt compare the model, not the prompt
PLAN_NAME = "ui-first-pool.json"  # in the home, while the first pool is incomplete
TOY_GUIDANCE = 3.0  # the toy model's best classifier-free guidance


def toy_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` distinct toy-world captions that mention the shape and leave one to three attributes open."""
    from rlft.toy.world import ATTRIBUTES, caption, random_plan, random_scene

    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        scene = random_scene(rng)
        plan = random_plan(rng, p_mention=0.55)
        if len(plan.mention) == len(ATTRIBUTES):  # fully specified: nothing left to taste
            continue
        text = caption(scene, plan)
        if text not in out:
            out.append(text)
    return out


def ensure_pool(store, pool_size: int) -> int:
    """Generate the first pool on the toy world when the pool is empty (or that generation was cut off).

    Prompt j gets seeds j*SEEDS_PER_PROMPT ... (+SEEDS_PER_PROMPT-1), one batch per prompt. Returns the
    number of images generated. A progress bar runs on stderr.
    """
    from prefs.atomic import write_json
    from prefs.home import home_dir

    marker = home_dir() / PLAN_NAME
    if store.count_images() and not marker.exists():
        return 0
    if marker.exists():
        prompts = json.loads(marker.read_text())["prompts"]
    else:
        prompts = toy_prompts(max(1, -(-pool_size // SEEDS_PER_PROMPT)))
        write_json(marker, {"prompts": prompts})
    have: dict[str, int] = {}
    for im in store.images():
        if im.model == "toy":
            have[im.prompt] = have.get(im.prompt, 0) + 1
    todo = [(j, p) for j, p in enumerate(prompts) if have.get(p, 0) < SEEDS_PER_PROMPT]
    if todo:
        n = len(todo) * SEEDS_PER_PROMPT
        click.echo(f"rlft ui: the pool is empty; generating {n} images on the toy world (once)...", err=True)
        from tqdm.auto import tqdm

        from rlft.models.generate import generate
        from rlft.models.pipeline import load_pipeline, quiet_libraries

        quiet_libraries()
        pipe = load_pipeline("toy")
        with tqdm(total=n, desc="first pool", unit="img", dynamic_ncols=True) as bar:
            for j, p in todo:
                generate(pipe, [p], n=SEEDS_PER_PROMPT, seed=j * SEEDS_PER_PROMPT, guidance=TOY_GUIDANCE,
                         batch_size=SEEDS_PER_PROMPT, store=store, progress=False, model="toy")
                bar.update(SEEDS_PER_PROMPT)
    marker.unlink(missing_ok=True)
    return len(todo) * SEEDS_PER_PROMPT


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (others than loopback need --auth).")
@click.option("--port", type=int, default=7860, show_default=True, help="Port (0: any free port).")
@click.option("--auth", "auth", multiple=True, metavar="USER:PASS", help="Require a login; repeat for several raters. Votes go to the login name.")
@click.option("--rater", default=None, help="Rate as this name in every browser (default: ask once per browser).")
@click.option("--strategy", type=STRATEGY, default=None, help="Pair strategy or mix, e.g. 'uncertain:0.7,balanced:0.25,repeat:0.05' (default: same_prompt + 5% repeats).")
@click.option("--open", "open_browser", is_flag=True, help="Open the app in a browser when one is available (else print the URL).")
@click.option("--pool-size", type=click.IntRange(2, 10000), default=48, show_default=True, help="Images to generate on the toy world when the pool is empty.")
@click.option("--no-generate", is_flag=True, help="Never generate a first pool, even when the pool is empty.")
@click.option("--reward", "reward_spec", default=None,
              help="Rank the Gallery (and score 'uncertain' pairs) by this reward: a version (r0003, a folder) or a "
                   "built-in (pickscore, hpsv2, laion-aesthetic, clipscore, ...).  [default: the newest version]")
def ui(host, port, auth, rater, strategy, open_browser, pool_size, no_generate, reward_spec):
    """Rate pairs of images in the browser, see the gallery and your progress."""
    import prefs
    from prefs.errors import UserError
    from ui.app import AppConfig
    from ui.server import ServeOptions, parse_auth, serve

    pairs = parse_auth(auth)  # --strategy is already a checked StrategyMix (or None): see rlft.cli.params
    if rater is not None and not rater.strip():
        raise UserError("--rater must not be empty")
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    if reward_spec is not None:
        check_reward_spec(reward_spec)
    store = prefs.open_store()
    interrupted = False
    try:
        if not no_generate:
            ensure_pool(store, pool_size)
        if store.count_images() < 2:
            raise UserError("the pool has fewer than 2 images: add some with `rlft generate` or `rlft import`")
        serve(store, ServeOptions(host=host, port=port, auth=pairs, open_browser=open_browser),
              AppConfig(strategy=strategy, rater=rater.strip() if rater else None, reward=reward_spec), block=True)
    except KeyboardInterrupt:
        interrupted = True
        click.echo("rlft ui: stopped", err=True)
    finally:
        store.close()
    sys.stdout.flush()
    if interrupted:
        # Ctrl-C: the server is stopped and the store closed, nothing is left to write; skip the interpreter's
        # teardown of Gradio's module graph (over a second), so the terminal is back at once.
        sys.stderr.flush()
        os._exit(0)


def check_reward_spec(spec: str) -> None:
    """UserError now, before the server starts, for a `--reward` that names no version and no built-in (a built-in's
    weights load in the background, as a version's do)."""
    from reward.builtins import image_space, is_builtin
    from reward.versions import resolve

    if is_builtin(spec):
        image_space(spec)
    else:
        resolve(spec)
