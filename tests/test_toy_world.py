"""The toy world's generator: deterministic, exact palette, captions that say what the pixels show."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rlft.toy import checker, world


def test_draw_is_deterministic_per_seed():
    scene = world.Scene("star", "red", "blue", "medium", "left")
    a, b = world.to_array(world.draw(scene, 7)), world.to_array(world.draw(scene, 7))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, world.to_array(world.draw(scene, 8)))  # the seed moves the jitter


def test_sample_stream_is_deterministic():
    s1 = [(s.caption, s.scene, s.seed) for _, s in zip(range(50), world.samples(3), strict=False)]
    s2 = [(s.caption, s.scene, s.seed) for _, s in zip(range(50), world.samples(3), strict=False)]
    assert s1 == s2
    assert s1 != [(s.caption, s.scene, s.seed) for _, s in zip(range(50), world.samples(4), strict=False)]


@pytest.mark.parametrize("shape", world.SHAPES)
def test_palette_is_exact(shape):
    scene = world.Scene(shape, "orange", "purple", "large", "center")
    a = world.to_array(world.draw(scene, 0))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert tuple(a[0, 0]) == world.PALETTE["purple"]
    assert tuple(a[-1, -1]) == world.PALETTE["purple"]
    # The shape's body (off-centre for the ring, whose centre is background) is exactly its colour.
    y, x = (32, 32) if shape != "ring" else (32, 32 + 12)
    if shape == "star":
        y = 34
    assert tuple(a[y, x]) == world.PALETTE["orange"]
    colours = {tuple(c) for c in a.reshape(-1, 3)}
    assert world.PALETTE["orange"] in colours and world.PALETTE["purple"] in colours


def test_palette_constants():
    assert len(world.COLORS) == 8 and set(world.SHAPES) == {"circle", "square", "triangle", "star", "ring"}
    assert world.PALETTE["red"] == (220, 30, 30) and world.PALETTE["black"] == (20, 20, 20)
    with pytest.raises(ValueError, match="must differ"):
        world.Scene("circle", "red", "red", "small", "left")
    with pytest.raises(ValueError, match="unknown shape"):
        world.Scene("hexagon", "red", "blue", "small", "left")


def test_pixels_match_scene_by_checker():
    hits = {k: 0 for k in ("background", "color", "size", "position")}
    n = 400
    for _, s in zip(range(n), world.samples(11), strict=False):
        for k, v in checker.read(s.image).matches(s.scene).items():
            hits[k] += v
    assert hits["background"] == n and hits["color"] == n and hits["position"] == n
    assert hits["size"] >= 0.97 * n  # jitter makes the odd small star read as a different size class


def test_captions_mention_exactly_the_planned_attributes():
    rng = random.Random(0)
    for _ in range(300):
        scene = world.random_scene(rng)
        plan = world.random_plan(rng)
        text = world.caption(scene, plan)
        words = set(text.replace(",", " ").replace(";", " ").replace(":", " ").split())
        assert scene.shape in words
        assert (scene.size in words) == ("size" in plan.mention)
        if "color" in plan.mention:
            assert scene.color in words
        if "background" in plan.mention:
            assert scene.background in words
        if not ({"color", "background"} & plan.mention):
            assert not (set(world.COLORS) & words)
        pos_words = {w for p in world.POSITION_PHRASES[scene.position] for w in p.split()} - {"the", "at", "on", "in", "side", "near"}
        assert bool(pos_words & words) == ("position" in plan.mention)
        assert " a o" not in text and " a a" not in text  # "an orange"


def test_full_captions_use_several_templates():
    scene = world.Scene("ring", "green", "white", "small", "top")
    texts = {world.caption(scene, world.full_plan(t)) for t in range(world.N_TEMPLATES)}
    assert len(texts) == world.N_TEMPLATES
    assert "a small green ring on a white background at the top" in texts
    for t in texts:
        assert all(w in t for w in ("small", "green", "ring", "white", "top"))


def test_heldout_split():
    scenes = world.all_scenes()
    assert len(scenes) == 5 * 8 * 7 * 3 * 5
    held = world.heldout_scenes()
    assert 0.07 < len(held) / len(scenes) < 0.13
    assert not any(world.is_heldout(s.scene) for _, s in zip(range(300), world.samples(5), strict=False))
    assert all(world.is_heldout(s.scene) for _, s in zip(range(50), world.samples(5, heldout=True), strict=False))


@pytest.mark.parametrize("attr", ["shape", "color", "background", "size", "position", "swap"])
def test_perturb_changes_one_attribute(attr):
    rng = random.Random(1)
    scene = world.Scene("circle", "red", "blue", "small", "left")
    other = world.perturb(scene, attr, rng)
    diff = {a for a in world.ATTRIBUTES if getattr(scene, a) != getattr(other, a)}
    assert diff == ({"color", "background"} if attr == "swap" else {attr})


def test_toy_prompt_set_leaves_colour_size_and_position_open():
    from rlft.prompts import load_prompts

    prompts = load_prompts("toy")
    assert len(prompts) == len(world.SHAPES) * len(world.COLORS) == len(set(prompts))
    for p in prompts:
        words = set(p.split())
        assert len(words & set(world.SHAPES)) == 1
        assert len(words & set(world.COLORS)) == 1  # the background only
        assert not words & set(world.SIZES) and not words & set(world.POSITIONS)
