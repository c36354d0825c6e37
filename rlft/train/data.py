"""A run's training data from the store: dpo's judgements, rwr's mixed-in top-rated images.

`training_data` takes what a new run's config asks for, or exactly what a resumed run started from (the
judgements up to the last one it saw, the same mixed-in images), so judging more in between does not change a
resumed run's result.
"""

from __future__ import annotations

from collections.abc import Callable

from prefs.errors import NotFoundError, UserError


def training_data(config, rater: str | None = None, resumed: dict | None = None,
                  notice: Callable[[str], None] = lambda message: None) -> tuple[list, list, dict]:
    """(judgements, mixed-in images, what to record in the provenance) for `config` (a `TrainConfig`); `resumed`:
    the provenance of the run being resumed. Empty when the algorithm needs neither."""
    if not (config.algo == "dpo" or (config.algo == "rwr" and config.rwr.mix_top_rated)):
        return [], [], {}
    from prefs import open_store

    with open_store() as store:
        if config.algo == "dpo":
            judgements, info = _judgements_for(store, rater, resumed, notice)
            return judgements, [], info
        return [], *_mixed_for(store, config.rwr.mix_top_rated, resumed, notice)


def _judgements_for(store, rater, resumed, notice) -> tuple[list, dict]:
    through = limit = None
    if resumed is not None:
        through = resumed.get("judgements_through")
        if through is None:  # a run made before the last judgement's id was recorded
            limit = resumed.get("judgements")
            notice(f"this run did not record its last judgement; the resume takes the first {limit} decisive ones")
    judgements, last_id = load_judgements(store, rater, through=through, limit=limit)
    if resumed is not None and len(judgements) != resumed.get("judgements"):
        raise UserError(f"cannot resume: the store holds {len(judgements)} of the {resumed.get('judgements')} "
                        "judgements this run started from (some were undone or deleted); start a new run")
    return judgements, {"judgements": len(judgements), "judgements_through": last_id}


def _mixed_for(store, n_mix: int, resumed, notice) -> tuple[list, dict]:
    shas = resumed.get("mixed_image_sha256") if resumed is not None else None
    if resumed is not None and shas is None:  # a run made before the images were recorded: as many as it mixed then
        n_mix = min(n_mix, resumed.get("mixed_images", n_mix))
        notice("this run did not record which rated images it mixed in; the resume takes the top-rated "
               "ones as they stand now")
    extra, shas = (images_by_sha(store, shas), shas) if shas is not None else top_rated(store, n_mix)
    return extra, {"mixed_images": len(extra), "mixed_image_sha256": shas}


def load_judgements(store, rater: str | None = None, through: int | None = None,
                    limit: int | None = None) -> tuple[list, int]:
    """(winner PIL, loser PIL, winner's prompt, loser's prompt) for every decisive judgement (ties, skips and
    both-bad are left out), with the id of the last one; a resumed run's stop at judgement id `through`, or after
    the first `limit`."""
    from PIL import Image

    out = []
    cache = {}

    def img(sha):
        if sha not in cache:
            row = store.get_image(sha)
            with Image.open(store.image_path(row)) as im:
                cache[sha] = (im.convert("RGB"), row.prompt or "")
        return cache[sha]

    last = 0
    for j in store.judgements(rater=rater):
        if (through is not None and j.id > through) or (limit is not None and len(out) >= limit):
            break
        if j.outcome not in ("a", "b"):
            continue
        win, lose = (j.image_a, j.image_b) if j.outcome == "a" else (j.image_b, j.image_a)
        (wi, wp), (li, lp) = img(win), img(lose)
        out.append((wi, li, wp, lp))
        last = j.id
    if not out:
        who = f" by {rater}" if rater else ""
        raise UserError(f"no decisive judgements{who} to train dpo on; rate some pairs first (`rlft ui` or `rlft simulate`)")
    return out, last


def top_rated(store, n: int) -> tuple[list, list[str]]:
    """The `n` pool images with the highest Bradley-Terry scores, as (PIL, caption), and their sha256s."""
    scores = store.fit_scores()
    best = sorted(scores, key=scores.get, reverse=True)[:n]
    return images_by_sha(store, best), best


def images_by_sha(store, shas: list[str]) -> list:
    """(PIL, caption) of pool images by sha256; UserError when one is gone."""
    from PIL import Image

    out = []
    for sha in shas:
        try:
            row = store.get_image(sha)
            with Image.open(store.image_path(row)) as im:
                out.append((im.convert("RGB"), row.prompt or ""))
        except (NotFoundError, OSError):
            raise UserError(f"pool image {sha[:12]}, to be mixed in (--mix-top-rated), is gone or unreadable; rate "
                            "others, or start a new run without it") from None
    return out
