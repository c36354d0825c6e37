"""Gallery data: images ranked by score and filtered by prompt, and the compare-runs matching.

A "run" is what produced an image: its `model` plus the `lora` (training run) applied, if any. Two runs
are compared on the images they share a prompt and seed for, so the only difference is the weights.
"""

from __future__ import annotations

import collections
from typing import Iterable

ALL = "(all prompts)"
NO_LORA = "no LoRA"


def run_label(image) -> str:
    """`model` or `model + lora`: the name of the run an image came from."""
    model = image.model or "unknown model"
    return f"{model} + {image.lora}" if image.lora else model


def usable(images: Iterable) -> list:
    return [im for im in images if im.broken_at is None]


def prompt_choices(images: Iterable) -> list[str]:
    """`ALL` then every prompt, most images first (ties alphabetical)."""
    counts = collections.Counter(im.prompt for im in images)
    return [ALL] + [p for p, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def ranked(images: list, scores: dict[str, float], prompt: str | None = None, search: str = "",
           limit: int = 200) -> list[dict]:
    """Images matching the filters, best first (unscored images last, most judged first), up to `limit`.

    `prompt`: an exact prompt (or None/`ALL` for all); `search`: case-insensitive words that must all
    appear in the prompt. Each row: rank, image, score (None when unscored), n_judgements.
    """
    words = search.lower().split()
    pick = [im for im in images
            if (not prompt or prompt == ALL or im.prompt == prompt)
            and all(w in im.prompt.lower() for w in words)]
    pick.sort(key=lambda im: (im.sha256 not in scores, -scores.get(im.sha256, 0.0), -im.n_judgements, im.id))
    return [{"rank": k + 1, "image": im, "score": scores.get(im.sha256), "n_judgements": im.n_judgements}
            for k, im in enumerate(pick[:limit])]


def run_choices(images: Iterable) -> list[str]:
    """Every run with images, most images first."""
    counts = collections.Counter(run_label(im) for im in images)
    return [r for r, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def shared_pairs(images: list, run_a: str, run_b: str, prompt: str | None = None) -> list[tuple]:
    """(prompt, seed, image from run_a, image from run_b) for every prompt + seed both runs have, in prompt then
    seed order ([] when a run is missing or both are the same)."""
    if not run_a or not run_b or run_a == run_b:
        return []
    by_key: dict[str, dict[tuple, object]] = {run_a: {}, run_b: {}}
    for im in images:
        label = run_label(im)
        if label in by_key and im.seed is not None and (not prompt or prompt == ALL or im.prompt == prompt):
            by_key[label].setdefault((im.prompt, im.seed), im)
    shared = sorted(set(by_key[run_a]) & set(by_key[run_b]))
    return [(key[0], key[1], by_key[run_a][key], by_key[run_b][key]) for key in shared]


def compare(images: list, scores: dict[str, float], run_a: str, run_b: str, prompt: str | None = None,
            limit: int = 100) -> list[tuple]:
    """(prompt, seed, image from run_a, image from run_b, score_a, score_b) for the first `limit` shared pairs."""
    return [(p, seed, a, b, scores.get(a.sha256), scores.get(b.sha256))
            for p, seed, a, b in shared_pairs(images, run_a, run_b, prompt)[:limit]]


def default_runs(runs: list[str], images) -> tuple[str | None, str | None]:
    """The runs to compare first: a base run (no LoRA; the one with most images) against the newest LoRA run
    on it; else the two runs with most images."""
    with_lora = {run_label(im): im.lora for im in images if im.lora}
    base = next((r for r in runs if r not in with_lora), None)
    tuned = sorted((r for r in runs if r in with_lora), key=lambda r: (with_lora[r], r))
    if base is not None and tuned:
        return base, tuned[-1]
    return (runs[0] if runs else None), (runs[1] if len(runs) > 1 else None)
