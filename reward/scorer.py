"""The reward model as a scorer for `prefs`' `uncertain` pair strategy (active learning).

    scorer = reward.make_scorer(store, "latest")     # a prefs.ScoreCache around the ensemble
    scorer = reward.make_scorer(store, "pickscore")  # or a built-in reward (reward.builtins)
    pair = store.next_pair("alice", "uncertain:0.7,balanced:0.25,repeat:0.05", scorer=scorer)

Each image is scored once (embeddings come from the on-disk cache, utilities are memoised per sha256; a version
with a tower, tuned or read for its patch tokens, computes its own features from the files instead): the
mean over ensemble members is the utility, their standard deviation the uncertainty, both on the
Bradley-Terry logit scale as `prefs.samplers` expects, and each member's utilities go along (joint samples). A
version with a prior adds each member's weighted prior score, cached per image by `reward.prior.PriorScoreCache`.
Call `scorer.clear()` after loading a new version.

`OnlineScorer` is the active-learning loop without saving versions: it refits a small ensemble in memory on
the store's standing judgements every `refit_every` votes (what `rlft simulate --scorer online` uses):

    scorer = reward.OnlineScorer(store, clip="toy", rater="alice", refit_every=50)
    pair = store.next_pair("alice", "uncertain", scorer=scorer)   # refits when 50 new votes stand
"""

from __future__ import annotations

import dataclasses
import logging

from reward.embeddings import EmbeddingCache

_log = logging.getLogger(__name__)
TOWER_BATCH = 64  # images per tower pass when a version computes its own features


class RewardScorer:
    """`scorer(images: list[prefs.Image]) -> (means, stds, members)` backed by a RewardModel and the embedding
    cache; `members` (K x N) are the ensemble's own utilities, so `uncertain` sees where members err together."""

    def __init__(self, model, store, cache: EmbeddingCache | None = None):
        self.model = model
        self.store = store
        self.cache = cache or EmbeddingCache(model.clip_spec)
        self._prior_cache = None

    def __call__(self, images):
        """Scores of `images`; one whose pool file is missing or unreadable is skipped with a logged notice and
        scores 0 with no spread in every member (it says nothing about the taste)."""
        import numpy as np

        from reward.model import member_mean_std

        kept, emb = self._features(images)
        k = len(self.model.heads)
        members = np.zeros((k, len(images)))
        if kept:
            text = self.cache.embed_texts([im.prompt or "" for im in kept]) if self.model.prompt_conditioned else None
            at = {im.sha256: i for i, im in enumerate(kept)}
            cols = [j for j, im in enumerate(images) if im.sha256 in at]
            prior = self._prior_scores(kept) if self.model.prior is not None else None
            members[:, cols] = self.model.member_scores_np(emb, text, prior)[:, [at[images[j].sha256] for j in cols]]
        mean, std = member_mean_std(members)
        return mean.tolist(), std.tolist(), members

    def _prior_scores(self, images):
        """The prior's scores of `images` (readable pool images), from its score cache in the home."""
        from reward.prior import PriorScoreCache

        if self._prior_cache is None:
            self._prior_cache = PriorScoreCache(self.model.prior, self.cache.home)
        kept, s = self._prior_cache.scores(self.store, images)
        if len(kept) != len(images):
            at = {im.sha256: v for im, v in zip(kept, s, strict=True)}
            s = [at.get(im.sha256, 0.0) for im in images]
        return s

    def _features(self, images):
        """(the images whose files could be read, their features): the cached CLIP embeddings, or for a version
        with a tower its own features, computed from the files here. Those are not cached on disk: a tuned toy-CLIP
        pass costs about a millisecond an image (bench/bench_reward.py `spearman` measures it), and the ScoreCache
        around this scorer computes each image once per process."""
        if self.model.tower is None:
            return self.cache.embed_pool(self.store, images, progress=False)
        import torch

        from prefs.pool import ImageError, read_image
        from reward.embeddings import pil_to_tensor

        kept, pixels = [], []
        for im in images:
            try:
                pixels.append(pil_to_tensor(read_image(self.store.image_path(im))))
            except ImageError as e:
                _log.warning(f"skipped {e}")
                continue
            kept.append(im)
        by_size: dict[tuple, list[int]] = {}
        for i, x in enumerate(pixels):
            by_size.setdefault(tuple(x.shape), []).append(i)
        out: list = [None] * len(pixels)
        with torch.no_grad():
            for rows in by_size.values():
                for start in range(0, len(rows), TOWER_BATCH):
                    chunk = rows[start:start + TOWER_BATCH]
                    feats = self.model.embed(torch.stack([pixels[i] for i in chunk])).cpu()
                    for i, f in zip(chunk, feats, strict=True):
                        out[i] = f
        return kept, (torch.stack(out).numpy() if out else None)


class BuiltinScorer:
    """`scorer(images: list[prefs.Image]) -> (scores, None)` from a built-in reward (`reward.builtins`) on the pool
    files, each with its own prompt; no spread (one model). An unreadable file is skipped with a logged notice and
    scores 0."""

    def __init__(self, builtin, store):
        self.builtin, self.store = builtin, store

    def __call__(self, images):
        import torch

        from prefs.pool import ImageError, read_image
        from reward.embeddings import pil_to_tensor

        scores = [0.0] * len(images)
        by_size: dict[tuple, list[tuple[int, object]]] = {}
        for i, im in enumerate(images):
            try:
                x = pil_to_tensor(read_image(self.store.image_path(im)))
            except ImageError as e:
                _log.warning(f"skipped {e}")
                continue
            by_size.setdefault(tuple(x.shape), []).append((i, x))
        with torch.no_grad():
            for rows in by_size.values():
                for start in range(0, len(rows), TOWER_BATCH):
                    chunk = rows[start:start + TOWER_BATCH]
                    out = self.builtin.score(torch.stack([x for _, x in chunk]),
                                             [images[i].prompt or "" for i, _ in chunk])
                    for (i, _), v in zip(chunk, out.tolist(), strict=True):
                        scores[i] = float(v)
        return scores, None


def make_scorer(store, reward="latest", cache: EmbeddingCache | None = None):
    """A memoised `uncertain` scorer for `store` from a RewardModel, a version spec (`latest`, `r0003`, path) or a
    built-in (`pickscore`, `hpsv2=/path/HPS_v2.1_compressed.pt`, ...; `reward.builtins`)."""
    from prefs.samplers import ScoreCache
    from reward.builtins import is_builtin, load_builtin
    from reward.model import RewardModel, load

    if isinstance(reward, str) and is_builtin(reward):
        return ScoreCache(BuiltinScorer(load_builtin(reward), store))
    model = reward if isinstance(reward, RewardModel) else load(reward)
    return ScoreCache(RewardScorer(model, store, cache))


class OnlineScorer:
    """An `uncertain` scorer whose ensemble is refitted in memory as judgements arrive.

    Before `min_judgements` usable judgements (a, b, tie) exist it defers to `fallback` (e.g. the
    Bradley-Terry table; without one every image scores 0 +- 1, so `uncertain` picks at random). Refits
    happen lazily on the next call once `refit_every` new judgements stand, so a rater pays for a fit every
    `refit_every` votes, not per pair.
    """

    def __init__(self, store, clip: str = "toy", rater: str | None = None, refit_every: int = 50,
                 min_judgements: int = 20, fit=None, cache: EmbeddingCache | None = None, fallback=None, home=None):
        from reward.fit import FitConfig

        if refit_every < 1:
            from prefs.errors import UserError

            raise UserError(f"refit_every must be >= 1, got {refit_every}")
        self.store, self.rater, self.refit_every, self.min_judgements = store, rater, refit_every, min_judgements
        self.fit_config = fit or FitConfig(ensemble=5)
        self.cache = cache or EmbeddingCache(clip, home=home)
        self.clip_spec = clip
        self.fallback = fallback
        self.model = None
        self.fitted_on = -1  # judgements the current model saw
        self.refits = 0
        self._scores = None

    def _count(self) -> int:
        from reward.data import TARGET

        return self.store.count_judgements(rater=self.rater, outcomes=list(TARGET))

    def refresh(self) -> bool:
        """Refit if enough new judgements stand; True when the model changed."""
        n = self._count()
        if n < self.min_judgements or (self.model is not None and n - self.fitted_on < self.refit_every):
            return False
        from reward.fit import fit_ensemble
        from reward.model import RewardModel
        from reward.training import embedded_pairs

        data, emb, text = embedded_pairs(self.store, self.cache, self.rater, self.fit_config.prompt)
        config = dataclasses.replace(self.fit_config, seed=self.fit_config.seed + self.refits)
        fitted = fit_ensemble(emb, data.ia, data.ib, data.y, config, t=text)
        self.model = RewardModel(fitted.heads, self.clip_spec)
        self.fitted_on, self.refits = n, self.refits + 1
        self._scores = make_scorer(self.store, self.model, self.cache)
        return True

    def __call__(self, images):
        self.refresh()
        if self._scores is None:
            if self.fallback is not None:
                return self.fallback(images)
            return [0.0] * len(images), [1.0] * len(images)
        return self._scores(images)
