"""Helpers for the UI tests: a small pool of drawn toy-world PNGs and a server on a free port."""

from __future__ import annotations

import contextlib


def toy_pool(store, prompts: int = 4, per_prompt: int = 3, runs: tuple = ((None,),)) -> list[str]:
    """Drawn toy-world images (no diffusion): `prompts` captions x `per_prompt` seeds, model "toy"."""
    import random

    from rlft.toy.world import caption, draw, full_plan, random_scene

    rng = random.Random(0)
    shas = []
    for j in range(prompts):
        scene = random_scene(rng)
        text = caption(scene, full_plan(j % 6))
        for seed in range(per_prompt):
            shas.append(store.add_image(draw(scene, seed=seed * 101 + j), prompt=text, seed=seed, model="toy").sha256)
    return shas


def two_run_pool(store, prompts: int = 6, seeds: int = 5) -> list[tuple]:
    """A base run ("toy") and a tuned one ("toy" + LoRA "t0001") on the same prompts and seeds, drawn (the tuned
    image of a prompt + seed differs in colour); returns (prompt, seed, base image, tuned image) tuples."""
    import random

    from rlft.toy.world import caption, draw, full_plan, perturb, random_scene

    rng = random.Random(1)
    out = []
    for j in range(prompts):
        scene = random_scene(rng)
        text = caption(scene, full_plan(j % 6))
        for seed in range(seeds):
            base = store.add_image(draw(scene, seed=seed * 7 + j), prompt=text, seed=seed, model="toy")
            tuned = store.add_image(draw(perturb(scene, "color", rng), seed=seed * 7 + j), prompt=text, seed=seed,
                                    model="toy", lora="t0001")
            out.append((text, seed, base, tuned))
    return out


@contextlib.contextmanager
def running(store, auth=None, port: int = 0, **config):
    """A live server on 127.0.0.1 and `port` (0: a free one); yields (url, rating_app)."""
    from ui.app import AppConfig
    from ui.server import ServeOptions, serve, stop

    demo, url, app = serve(store, ServeOptions(port=port, auth=auth, quiet=True), AppConfig(**config), block=False)
    try:
        yield url, app
    finally:
        stop(demo, app)


@contextlib.contextmanager
def module_pool(tmp_path_factory, name: str, prompts: int, per_prompt: int):
    """A store in its own home for a test module (the autouse home fixture is per test)."""
    import prefs

    s = prefs.open_store(home=tmp_path_factory.mktemp(name), seed=0)
    toy_pool(s, prompts=prompts, per_prompt=per_prompt)
    try:
        yield s
    finally:
        s.close()
