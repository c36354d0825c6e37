"""prefs: the preference store (image pool, pairwise judgements, pair selection, import/export, stats).

Knows nothing of torch. Names below are imported lazily, so `import prefs.errors` stays cheap.

    store = prefs.open_store()                      # RLFT_DB, else SQLite in RLFT_HOME
    img = store.add_image("a.png", prompt="a red circle", seed=1, model="toy")
    mix = prefs.parse_mix("uncertain:0.7,balanced:0.25,repeat:0.05")   # a StrategyMix, checked once
    pair = store.next_pair("alice", strategy=mix, scorer=my_scorer)
    store.record_judgement(pair.a.sha256, pair.b.sha256, "a", rater="alice", shown_left="a",
                            client_vote_id=vote_uuid, strategy=pair.strategy, predicted_p=pair.predicted_p)
    store.undo_last("alice")
    store.stats()["by_outcome"]; store.fit_scores(); store.image_path(img.sha256)
    for j in store.judgements(): ...               # prefs.Judgement records
    for im in store.images(): ...                   # prefs.models.Image rows

Main names: `open_store`, `Store`, `Judgement`, `Pair`, `Image` (row), `OUTCOMES`, `register_strategy`,
`StrategyMix`, `parse_mix`, `ScoreTable`, `ScoreCache`, `NoPairError`, `ImageError`, `SchemaError`,
`ConflictError`, `UserError`, `NotFoundError`. The scorer protocol for the `uncertain` strategy is documented in `prefs.samplers`.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "open_store": "prefs.store",
    "Store": "prefs.store",
    "ConflictError": "prefs.store",
    "NewImage": "prefs.store",
    "Judgement": "prefs.records",
    "Pair": "prefs.records",
    "Image": "prefs.models",
    "OUTCOMES": "prefs.models",
    "register_strategy": "prefs.samplers",
    "STRATEGIES": "prefs.samplers",
    "StrategyMix": "prefs.samplers",
    "parse_mix": "prefs.samplers",
    "ScoreTable": "prefs.samplers",
    "ScoreCache": "prefs.samplers",
    "NoPairError": "prefs.samplers",
    "ImageError": "prefs.pool",
    "Limits": "prefs.pool",
    "SchemaError": "prefs.migrate",
    "UserError": "prefs.errors",
    "NotFoundError": "prefs.errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prefs' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__():
    return __all__
