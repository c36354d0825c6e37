"""reward: a person's taste as a CLIP-based reward model, learnt from their pairwise judgements.

    import reward
    model = reward.load("latest")                 # or "r0003", or a version folder
    scores = model.score(images, prompts)         # images: float N x 3 x H x W in [0, 1] (any size) or PIL list
    scores.sum().backward()                       # differentiable w.r.t. the pixel tensor
    model.members                                 # K ensemble members; model.subset([0, 1]) keeps some
    held_out = model.subset(model.members - 1)    # e.g. one member as a held-out reward during training
    model.embed(images)                           # L2-normalised CLIP embeddings (N x D)
    p, std = model.predict_pair(img_a, img_b, prompt=None)   # P(a preferred), spread over members
    model.version, model.clip_spec, model.path, model.metadata

    fn = reward.as_reward_fn(model)               # ddpo-pytorch's shape: fn(images, prompts, metadata) -> (scores, info)
    reward.versions.list_versions(); reward.versions.resolve("latest"); reward.versions.latest()

    scorer = reward.make_scorer(store, "latest")  # for prefs' `uncertain` pair strategy (active learning)
    judge = reward.load_builtin("pickscore")      # public rewards by name: reward.builtins (also NAME=PATH)
    result = reward.train(store, reward.RewardTrainConfig(clip="toy", fit=reward.FitConfig(head="mlp", ensemble=5)))
    tuned = reward.train(store, reward.RewardTrainConfig(split="image", tune=reward.TuneConfig(mode="blocks")))
    result.model                                  # the new version in memory, as reward.load gives it
    mine = reward.train(store, reward.RewardTrainConfig(prior="r0003"))  # w * r0003 + a personal head (reward.prior)

Utilities are on the Bradley-Terry logit scale: P(a beats b) = sigmoid(r(a) - r(b)), centred on the training
pool. Modules: `clip` (CLIP specs, differentiable preprocessing), `embeddings` (the on-disk cache), `heads`,
`loss`, `fit`, `data`, `evaluate`, `training`, `versions`, `model`, `scorer`, `reward_fn`, `laion` (LAION
aesthetic priors), `aesthetic` (aesthetic embeddings and aesthetic-gradients conditioning), `tower` (the CLIP
image tower as the heads' feature extractor: frozen, LoRA or last blocks; patch tokens), `tune` (tuning it with
the heads on the judgements, early stopping), `builtins` (public rewards by name: laion-aesthetic, pickscore,
hpsv2, clipscore, JPEG (in)compressibility), `combine` (weighted sums of rewards: `latest + 0.3 * pickscore`),
`prior` (starting from another reward: w * prior + personal).
Errors for bad input are `prefs.errors.UserError` / `NotFoundError`.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "load": "reward.model",
    "RewardModel": "reward.model",
    "as_reward_fn": "reward.reward_fn",
    "make_scorer": "reward.scorer",
    "OnlineScorer": "reward.scorer",
    "RewardScorer": "reward.scorer",
    "train": "reward.training",
    "RewardTrainConfig": "reward.training",
    "FitConfig": "reward.fit",
    "TuneConfig": "reward.tune",
    "EmbeddingCache": "reward.embeddings",
    "load_laion": "reward.laion",
    "load_builtin": "reward.builtins",
    "is_builtin": "reward.builtins",
    "load_embedding": "reward.aesthetic",
    "save_embedding": "reward.aesthetic",
    "AestheticConditioner": "reward.aesthetic",
}
__all__ = sorted(_LAZY) + ["versions"]


def __getattr__(name: str):
    if name == "versions":
        return import_module("reward.versions")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reward' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__():
    return __all__
