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
    judgements, last_id = load_judgements(store, rater, through=through, limit=limit, notice=notice)
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
    extra, shas = (images_by_sha(store, shas), shas) if shas is not None else top_rated(store, n_mix, notice)
    return extra, {"mixed_images": len(extra), "mixed_image_sha256": shas}


def load_judgements(store, rater: str | None = None, through: int | None = None, limit: int | None = None,
                    notice: Callable[[str], None] = lambda message: None) -> tuple[list, int]:
    """(winner PIL, loser PIL, winner's prompt, loser's prompt) for every decisive judgement (ties, skips and
    both-bad are left out), with the id of the last one; a resumed run's stop at judgement id `through`, or after
    the first `limit`. A judgement whose pool file is gone or unreadable is skipped, with one notice for all."""
    from PIL import Image

    out = []
    cache = {}
    missing: set[str] = set()

    def img(sha):
        if sha not in cache:
            try:
                row = store.get_image(sha)
                with Image.open(store.image_path(row)) as im:
                    cache[sha] = (im.convert("RGB"), row.prompt or "")
            except (NotFoundError, OSError):
                cache[sha] = None
                missing.add(sha)
        return cache[sha]

    last = 0
    skipped = 0
    for j in store.judgements(rater=rater):
        if (through is not None and j.id > through) or (limit is not None and len(out) >= limit):
            break
        if j.outcome not in ("a", "b"):
            continue
        win, lose = (j.image_a, j.image_b) if j.outcome == "a" else (j.image_b, j.image_a)
        w, lo = img(win), img(lose)
        if w is None or lo is None:
            skipped += 1
            continue
        out.append((w[0], lo[0], w[1], lo[1]))
        last = j.id
    if skipped:
        notice(f"{skipped} judgement(s) skipped: {len(missing)} of their pool image file(s) are gone or unreadable "
               f"(e.g. {sorted(missing)[0][:12]})")
    if not out:
        who = f" by {rater}" if rater else ""
        raise UserError(f"no decisive judgements{who} to train dpo on; rate some pairs first (`rlft ui` or `rlft simulate`)")
    return out, last


def top_rated(store, n: int, notice: Callable[[str], None] = lambda message: None) -> tuple[list, list[str]]:
    """The `n` pool images with the highest Bradley-Terry scores whose files can be read, as (PIL, caption), and
    their sha256s; one whose file is gone or unreadable gives way to the next, with a notice."""
    from PIL import Image

    scores = store.fit_scores()
    out, shas, gone = [], [], []
    for sha in sorted(scores, key=scores.get, reverse=True):
        if len(out) == n:
            break
        try:
            row = store.get_image(sha)
            with Image.open(store.image_path(row)) as im:
                out.append((im.convert("RGB"), row.prompt or ""))
            shas.append(sha)
        except (NotFoundError, OSError):
            gone.append(sha)
    if gone:
        notice(f"{len(gone)} top-rated pool image(s) skipped, their files gone or unreadable (e.g. {gone[0][:12]})")
    return out, shas


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
