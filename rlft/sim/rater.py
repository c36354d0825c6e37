"""Simulated raters: judge pairs from the pool with an oracle utility and Bradley-Terry noise.

They go through exactly the path a person's votes take (`Store.next_pair` then `Store.record_judgement`),
so tests and benchmarks exercise the whole loop without a person. With the `uncertain` strategy the pairs come
from a reward ensemble refitted in memory every REFRESH_EVERY votes (`scorer="online"`, active learning), from
the Bradley-Terry item scores (`"bt"`), or from a saved reward version (`"latest"`, `"r0003"`, a path). P(a wins) = sigmoid((u_a - u_b) / T);
with probability `tie_prob` the answer is a tie instead; T = 0 means a noiseless rater (equal utilities tie).

T is either given (`noise`) or calibrated (`consistency`): the T at which the rater agrees with the noiseless
oracle on a share `consistency` of random pool pairs with distinct utilities (`calibrate_noise`). A fixed T
means very different raters for different oracles (a T that makes `big` 90% consistent makes `dark`, whose
utilities span a smaller range, little better than a coin), so benchmarks compare oracles at equal consistency.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import uuid
from collections import Counter
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from prefs.errors import UserError
from prefs.pool import ImageError
from prefs.samplers import ImageSet, NoPairError, StrategyMix, parse_mix, usable_count
from prefs.store import Store

MAX_SKIPS_IN_A_ROW = 50  # pairs not judged for an unreadable image before the run stops (pair choice is blind to files)
REFRESH_EVERY = 50  # votes between refits of the score table (or ensemble) that `uncertain`, `bald` and `epig` use
_log = logging.getLogger(__name__)
CALIBRATION_IMAGES = 2000  # pool images whose utilities `consistency` calibrates the noise on, at most


@dataclasses.dataclass
class SimulationConfig:
    """How a simulated rater behaves."""

    n: int  # pairs to judge
    noise: float = 1.0  # Bradley-Terry temperature T; 0 = always prefer the higher utility
    consistency: float | None = None  # when set, T is calibrated on the pool to this agreement with the oracle
    tie_prob: float = 0.0  # chance of answering "tie" regardless of the images
    rater: str = "sim"  # rater name recorded with each vote
    strategy: StrategyMix | None = None  # pair strategy mix (None: the store's default); text is parsed once, here
    seed: int = 0  # makes the pairs and the noise reproducible
    scorer: str = "online"  # what `uncertain` asks: online (an ensemble refitted every REFRESH_EVERY votes), bt, or a reward version
    clip: str = "toy"  # CLIP spec of the online ensemble's embeddings
    among: ImageSet | None = None  # pairs from these images only (e.g. this round's model's), while they last

    def __post_init__(self):
        if self.n < 0:
            raise UserError(f"--n must be >= 0, got {self.n}")
        self.strategy = parse_mix(self.strategy) if self.strategy else None
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise UserError(f"--noise must be a finite number >= 0, got {self.noise}")
        if self.consistency is not None and not 0.5 < self.consistency < 1:
            raise UserError(f"--consistency must be strictly between 0.5 and 1, got {self.consistency}")
        if not 0 <= self.tie_prob <= 1:
            raise UserError(f"--tie-prob must be in [0, 1], got {self.tie_prob}")
        if not self.scorer:
            raise UserError("--scorer must be online, bt, or a reward version (latest, r0003, a path)")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z, -50, 50)))


def calibrate_noise(utilities: Sequence[float], consistency: float = 0.9, rng: np.random.Generator | None = None,
                    pairs: int = 20_000) -> float:
    """The Bradley-Terry temperature T at which E[sigmoid(|u_a - u_b| / T)] = `consistency` over random pairs
    (a, b) of `utilities` with distinct utilities: the share of those pairs a T-noisy rater answers as the
    noiseless oracle does. `pairs` random pairs are drawn with `rng` (seeded default). Raises UserError when
    every utility is the same (no T can make a rater consistent with an oracle that never prefers)."""
    if not 0.5 < consistency < 1:
        raise UserError(f"consistency must be strictly between 0.5 and 1, got {consistency}")
    u = np.asarray(utilities, dtype=float)
    if len(u) < 2:
        raise UserError(f"cannot calibrate the noise on {len(u)} pool image(s): add at least two")
    rng = rng if rng is not None else np.random.default_rng(0)
    i, j = rng.integers(0, len(u), pairs), rng.integers(0, len(u), pairs)
    d = np.abs(u[i] - u[j])
    d = d[d > 1e-9]
    if len(d) == 0:
        raise UserError(f"cannot calibrate the noise: the oracle gives all {len(u)} pool images the same utility")
    # Consistency falls monotonically in T, from 1 (T far below the smallest gap) to 1/2 (T far above the
    # largest): bisect on a log scale between the two.
    lo, hi = 1e-3 * d.min(), 1e6 * d.max()
    for _ in range(200):
        t = math.sqrt(lo * hi)
        if _sigmoid(d / t).mean() > consistency:
            lo = t
        else:
            hi = t
    t = math.sqrt(lo * hi)
    reached = float(_sigmoid(d / t).mean())
    if abs(reached - consistency) > 1e-3:
        raise UserError(f"cannot calibrate the noise to consistency {consistency}: the closest reached is {reached:.4f}")
    return t


def _vote_id(rng: random.Random) -> str:
    """A fresh vote id. The draw from `rng` is kept so the seeded pairs and noise stay as they were; the id itself
    is random, as ids seeded alike would clash between raters, and between reruns, judging other pairs."""
    rng.getrandbits(128)
    return f"sim-{uuid.uuid4().hex}"


def simulate(store: Store, oracle: Callable[[Image.Image, str], float], config: SimulationConfig, progress: bool = False,
             notice: Callable[[str], None] | None = None) -> dict:
    """Judge `config.n` pairs; returns {"judged", "by_outcome", "agreement" (with the noiseless oracle), "stopped",
    "unreadable"}.

    A pair with an image whose pool file is missing or unreadable is not judged: it is skipped, with one
    `notice(message)` per such image (default: a logged warning), as every reader of the pool does; the run
    stops after MAX_SKIPS_IN_A_ROW such pairs in a row. `unreadable` lists those images' sha256s.

    With `config.among` the pairs come from that set of images; when it holds fewer than 2 usable images, or
    every pair of it has been judged, the rest come from the whole pool, with a notice, and the summary's
    `among_fallback` says why (`among` names the set)."""
    mix = config.strategy or store.default_strategy()  # chosen once: every pair of the run uses this mix
    say = notice or _log.warning
    among, among_fallback = config.among, None
    if among is not None:
        with store.engine.connect() as conn:
            found = usable_count(conn, among)
        if found < 2:
            among_fallback = f"{among} hold {found} usable image(s), fewer than a pair: pairs come from the whole pool"
            say(among_fallback)
            among = None
    rng = random.Random(config.seed)
    utilities: dict[str, float] = {}
    scorer = online = None
    scored = mix.needs_scorer
    if scored and config.scorer not in ("online", "bt"):
        import reward

        scorer = reward.make_scorer(store, config.scorer)  # a fixed saved version: raises NotFoundError listing them
    elif scored and config.scorer == "online":
        import reward

        online = reward.OnlineScorer(store, clip=config.clip, rater=config.rater, refit_every=REFRESH_EVERY)

    unreadable: dict[str, str] = {}

    def utility(image) -> float | None:
        """The oracle's utility, None for an image whose file cannot be read (told once)."""
        if image.sha256 in unreadable:
            return None
        if image.sha256 not in utilities:
            try:
                pixels = store.open_image(image)
            except ImageError as e:
                unreadable[image.sha256] = str(e)
                (notice or _log.warning)(f"skipped {e}")
                return None
            utilities[image.sha256] = float(oracle(pixels, image.prompt))
        return utilities[image.sha256]

    noise = config.noise
    if config.consistency is not None:
        pool = [im for im in store.images() if im.broken_at is None]
        if len(pool) > CALIBRATION_IMAGES:  # a uniform sample stands for a large pool (the oracle may be slow)
            pool = random.Random(config.seed).sample(pool, CALIBRATION_IMAGES)
        known = [utility(im) for im in tqdm(pool, desc="calibrate", unit="img", disable=not progress)]
        noise = calibrate_noise([u for u in known if u is not None], config.consistency, np.random.default_rng(config.seed))
    outcomes: Counter = Counter()
    agree = decisive = 0
    stopped = None
    skips = 0  # pairs in a row not judged for an unreadable image
    k = 0
    bar = tqdm(total=config.n, desc="simulate", unit="pair", disable=not progress)
    while k < config.n:
        if online is not None and online.model is not None:
            scorer = online  # fitted: the Bradley-Terry fallback is no longer read, so stop refitting it
        elif scored and config.scorer in ("online", "bt") and k % REFRESH_EVERY == 0:
            from prefs.stats import bt_score_table

            scorer = bt_score_table(store.engine)  # the item scores; the online ensemble's fallback until it has data
            if online is not None:
                online.fallback, scorer = scorer, online
        try:
            pair = store.next_pair(config.rater, mix, scorer=scorer, rng=rng, among=among)
        except NoPairError as e:
            if among is not None:  # that set is used up: the rest of the run judges the whole pool
                among_fallback = f"every pair of {among} was judged after {k} pairs: the rest come from the whole pool"
                say(among_fallback)
                among = None
                continue
            stopped = str(e)
            break
        ua, ub = utility(pair.a), utility(pair.b)
        if ua is None or ub is None:
            skips += 1
            if skips >= MAX_SKIPS_IN_A_ROW:
                stopped = (f"{skips} pairs in a row showed an image whose pool file is missing or unreadable "
                           f"({len(unreadable)} such images); restore the files and run it again")
                break
            continue
        skips = 0
        if rng.random() < config.tie_prob:
            outcome = "tie"
        elif noise == 0:
            outcome = "a" if ua > ub else "b" if ub > ua else "tie"
        else:
            z = max(min((ua - ub) / noise, 50.0), -50.0)
            outcome = "a" if rng.random() < 1 / (1 + math.exp(-z)) else "b"
        store.record_judgement(pair.a, pair.b, outcome, rater=config.rater, shown_left="a",
                                client_vote_id=_vote_id(rng),
                                strategy=pair.strategy, predicted_p=pair.predicted_p)
        outcomes[outcome] += 1
        if outcome in ("a", "b") and ua != ub:
            decisive += 1
            agree += (outcome == "a") == (ua > ub)
        k += 1
        bar.update(1)
    bar.close()
    return {
        "judged": sum(outcomes.values()),
        "refits": online.refits if online is not None else 0,
        "by_outcome": dict(outcomes),
        "agreement": agree / decisive if decisive else None,
        "noise": noise,
        "stopped": stopped,
        "unreadable": sorted(unreadable),
        "among": None if config.among is None else str(config.among),
        "among_fallback": among_fallback,
    }
