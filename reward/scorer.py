"""The reward model as a scorer for `prefs`' `uncertain` pair strategy (active learning).

    scorer = reward.make_scorer(store, "latest")     # a prefs.ScoreCache around the ensemble
    pair = store.next_pair("alice", "uncertain:0.7,balanced:0.25,repeat:0.05", scorer=scorer)

Each image is scored once (embeddings come from the on-disk cache, utilities are memoised per sha256): the
mean over ensemble members is the utility, their standard deviation the uncertainty, both on the
Bradley-Terry logit scale as `prefs.samplers` expects. Call `scorer.clear()` after loading a new version.
"""

from __future__ import annotations

from reward.embeddings import EmbeddingCache


class RewardScorer:
    """`scorer(images: list[prefs.Image]) -> (means, stds)` backed by a RewardModel and the embedding cache."""

    def __init__(self, model, store, cache: EmbeddingCache | None = None):
        self.model = model
        self.store = store
        self.cache = cache or EmbeddingCache(model.clip_spec)

    def __call__(self, images):
        emb = self.cache.embed_store_images(self.store, images, progress=False)
        text = self.cache.embed_texts([im.prompt or "" for im in images]) if self.model.prompt_conditioned else None
        means, stds = self.model.score_embeddings(emb, text)
        return means.tolist(), stds.tolist()


def make_scorer(store, reward="latest", cache: EmbeddingCache | None = None):
    """A memoised `uncertain` scorer for `store` from a RewardModel or a version spec (`latest`, `r0003`, path)."""
    from prefs.samplers import ScoreCache

    from reward.model import RewardModel, load

    model = reward if isinstance(reward, RewardModel) else load(reward)
    return ScoreCache(RewardScorer(model, store, cache))
