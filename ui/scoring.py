"""Scores for the gallery ranking and the `uncertain` pair strategy: the latest reward model when one
exists (or the reward `rlft ui --reward` names: a version or a built-in), else the Bradley-Terry fit of the
judgements in `prefs`.

`reward` (and with it torch) is imported only here, only inside functions, and only once a reward
version exists on disk, so the UI starts fast and works before anyone has trained a reward model.
A reward package that fails to load is logged and the UI falls back to Bradley-Terry.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

BT_REFRESH_S = 20.0  # the Bradley-Terry table behind `uncertain` is refitted at most this often
RANK_WAIT_S = 2.0  # a gallery waits this long for a reward version still loading, then ranks by Bradley-Terry
WARM_IMAGES = 5000  # images scored ahead by `warm_up` (more would hold the CPU from raters for long at start)


def reward_versions() -> list[dict]:
    """Every reward version's metadata (oldest first); [] when there is none or `reward` is unavailable."""
    try:
        from reward.versions import list_versions

        return list_versions()
    except Exception as e:  # the reward package is optional for the UI
        log.debug("no reward versions: %s", e)
        return []


def val_accuracy(meta: dict) -> float | None:
    """A version's held-out pairwise accuracy from its metadata, if recorded."""
    metrics = meta.get("metrics") or {}
    for key in ("val_accuracy", "heldout_accuracy", "accuracy"):
        value = metrics.get(key)
        if isinstance(value, (int, float)):
            return float(value)
    return None


class Scores:
    """Scorers for one store, reloaded when a new reward version appears.

    A reward version loads in a thread of its own (importing torch alone takes seconds): `warm_up` starts it
    with the server, so the first Gallery open finds it ready; a gallery that asks before it is ready waits
    `RANK_WAIT_S` at most and ranks by Bradley-Terry meanwhile, saying so.
    """

    def __init__(self, store, reward: str | None = None):
        self.store = store
        self.reward = reward  # a fixed reward (version or built-in spec) instead of the newest version
        self._lock = threading.Lock()
        self._reward = None  # (version id, ScoreCache scorer)
        self._failed: set[str] = set()  # versions that failed to load: don't retry on every call
        self._loaders: dict[str, threading.Thread] = {}  # version id -> the thread loading it
        self._bt = None  # (time, ScoreTable)

    def warm_up(self) -> None:
        """Start loading the newest reward version (and scoring the pool with it) in the background."""
        self.reward_scorer(wait=0)

    def _load(self, vid: str, meta: dict) -> None:
        try:
            from reward.scorer import make_scorer

            scorer = make_scorer(self.store, meta["path"])
            images = [im for _, im in zip(range(WARM_IMAGES), self.store.images(), strict=False) if im.broken_at is None]
            if images:
                scorer(images)  # memoised: the gallery's first ranking reads these
            with self._lock:
                self._reward = (vid, scorer)
        except Exception:
            log.exception("could not load reward version %s; ranking by Bradley-Terry instead", vid)
            with self._lock:
                self._failed.add(vid)

    def reward_scorer(self, wait: float | None = None):
        """(version id, scorer) for the newest reward version, or (None, None) when there is none or it failed
        to load. `wait`: seconds to wait for a version still loading (None: until it is loaded); when it is still
        loading after that, (version id, None)."""
        versions = [{"id": self.reward, "path": self.reward}] if self.reward else reward_versions()
        if not versions:
            return None, None
        vid = str(versions[-1].get("id") or versions[-1].get("path"))
        with self._lock:
            if self._reward is not None and self._reward[0] == vid:
                return self._reward
            if vid in self._failed:
                return None, None
            loader = self._loaders.get(vid)
            if loader is None:
                loader = self._loaders[vid] = threading.Thread(target=self._load, args=(vid, versions[-1]),
                                                               name=f"rlft-load-{vid}", daemon=True)
                loader.start()
        loader.join(wait)
        with self._lock:
            if self._reward is not None and self._reward[0] == vid:
                return self._reward
        return (vid, None) if loader.is_alive() else (None, None)

    def bt_table(self, max_age: float = BT_REFRESH_S):
        """A `ScoreTable` of the current Bradley-Terry fit (refitted when older than `max_age` seconds)."""
        from prefs.stats import bt_score_table

        now = time.monotonic()
        with self._lock:
            if self._bt is None or now - self._bt[0] > max_age:
                self._bt = (now, bt_score_table(self.store.engine))
            return self._bt[1]

    def pair_scorer(self):
        """The scorer for `uncertain`, `bald` and `epig`: the reward model's, else Bradley-Terry's."""
        _, scorer = self.reward_scorer()
        return scorer if scorer is not None else self.bt_table()

    def rank(self, images, wait: float = RANK_WAIT_S) -> tuple[dict[str, float], str]:
        """Score per sha256 for `images` and a label naming the source ("reward r0003", "Bradley-Terry", or
        "Bradley-Terry (reward r0003 still loading)")."""
        vid, scorer = self.reward_scorer(wait=wait)
        if scorer is not None and images:
            try:
                means = scorer(list(images))[0]
                return {im.sha256: float(m) for im, m in zip(images, means, strict=False)}, f"reward {vid}"
            except Exception:
                log.exception("reward scoring failed; ranking by Bradley-Terry")
        label = f"Bradley-Terry (reward {vid} still loading: open the tab again in a moment)" if vid else "Bradley-Terry"
        return self.store.fit_scores(), label
