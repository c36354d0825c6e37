"""Simulated raters: judge pairs from the pool with an oracle utility and Bradley-Terry noise.

They go through exactly the path a person's votes take (`Store.next_pair` then `Store.record_comparison`),
so tests and benchmarks exercise the whole loop without a person. With the `uncertain` strategy the pairs come
from a reward ensemble refitted in memory every REFRESH_EVERY votes (`scorer="online"`, active learning), from
the Bradley-Terry item scores (`"bt"`), or from a saved reward version (`"latest"`, `"r0003"`, a path). P(a wins) = sigmoid((u_a - u_b) / T);
with probability `tie_prob` the answer is a tie instead; T = 0 means a noiseless rater (equal utilities tie).
"""

from __future__ import annotations

import dataclasses
import math
import random
import uuid
from collections import Counter
from typing import Callable

from PIL import Image

from prefs.errors import UserError
from prefs.samplers import NoPairError, parse_mix
from prefs.store import Store

REFRESH_EVERY = 50  # votes between refits of the Bradley-Terry score table that `uncertain` uses


@dataclasses.dataclass
class SimulationConfig:
    """How a simulated rater behaves."""

    n: int  # pairs to judge
    noise: float = 1.0  # Bradley-Terry temperature T; 0 = always prefer the higher utility
    tie_prob: float = 0.0  # chance of answering "tie" regardless of the images
    rater: str = "sim"  # rater name recorded with each vote
    strategy: str | None = None  # pair strategy or mix (default: the store's default)
    seed: int = 0  # makes the pairs and the noise reproducible
    scorer: str = "online"  # what `uncertain` asks: online (an ensemble refitted every REFRESH_EVERY votes), bt, or a reward version
    clip: str = "toy"  # CLIP spec of the online ensemble's embeddings

    def __post_init__(self):
        if self.n < 0:
            raise UserError(f"--n must be >= 0, got {self.n}")
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise UserError(f"--noise must be a finite number >= 0, got {self.noise}")
        if not 0 <= self.tie_prob <= 1:
            raise UserError(f"--tie-prob must be in [0, 1], got {self.tie_prob}")
        if not self.scorer:
            raise UserError("--scorer must be online, bt, or a reward version (latest, r0003, a path)")


def simulate(store: Store, oracle: Callable[[Image.Image, str], float], config: SimulationConfig, progress: bool = False) -> dict:
    """Judge `config.n` pairs; returns {"judged", "by_outcome", "agreement" (with the noiseless oracle), "stopped"}."""
    mix = parse_mix(config.strategy, store.default_strategy())
    rng = random.Random(config.seed)
    utilities: dict[str, float] = {}
    scorer = online = None
    if "uncertain" in mix and config.scorer not in ("online", "bt"):
        import reward

        scorer = reward.make_scorer(store, config.scorer)  # a fixed saved version: raises NotFoundError listing them
    elif "uncertain" in mix and config.scorer == "online":
        import reward

        online = reward.OnlineScorer(store, clip=config.clip, rater=config.rater, refit_every=REFRESH_EVERY)

    def utility(image) -> float:
        if image.sha256 not in utilities:
            with Image.open(store.image_path(image)) as im:
                utilities[image.sha256] = float(oracle(im.convert("RGB"), image.prompt))
        return utilities[image.sha256]

    outcomes: Counter = Counter()
    agree = decisive = 0
    stopped = None
    from tqdm import tqdm

    for k in tqdm(range(config.n), desc="simulate", unit="pair", disable=not progress):
        if online is not None and online.model is not None:
            scorer = online  # fitted: the Bradley-Terry fallback is no longer read, so stop refitting it
        elif "uncertain" in mix and config.scorer in ("online", "bt") and k % REFRESH_EVERY == 0:
            from prefs.stats import bt_score_table

            scorer = bt_score_table(store)  # the item scores; the online ensemble's fallback until it has data
            if online is not None:
                online.fallback, scorer = scorer, online
        try:
            pair = store.next_pair(config.rater, mix, scorer=scorer, rng=rng)
        except NoPairError as e:
            stopped = str(e)
            break
        ua, ub = utility(pair.a), utility(pair.b)
        if rng.random() < config.tie_prob:
            outcome = "tie"
        elif config.noise == 0:
            outcome = "a" if ua > ub else "b" if ub > ua else "tie"
        else:
            z = max(min((ua - ub) / config.noise, 50.0), -50.0)
            outcome = "a" if rng.random() < 1 / (1 + math.exp(-z)) else "b"
        store.record_comparison(pair.a, pair.b, outcome, rater=config.rater, shown_left="a",
                                client_vote_id=f"sim-{uuid.UUID(int=rng.getrandbits(128)).hex}",
                                strategy=pair.strategy, predicted_p=pair.predicted_p)
        outcomes[outcome] += 1
        if outcome in ("a", "b") and ua != ub:
            decisive += 1
            agree += (outcome == "a") == (ua > ub)
    return {
        "judged": sum(outcomes.values()),
        "refits": online.refits if online is not None else 0,
        "by_outcome": dict(outcomes),
        "agreement": agree / decisive if decisive else None,
        "stopped": stopped,
    }
