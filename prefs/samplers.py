"""Pair selection: which two images a rater sees next. Strategies are pluggable and mix by weight.

A strategy is a function `fn(ctx: PairContext) -> Candidate | None` registered under a name with
`@register_strategy("name")` (`needs_scorer=True` if it reads `ctx.scorer`, so the UI and `rlft simulate`
hand it the reward model's scorer). It returns two image ids (any order: `next_pair` randomises the sides), the
predicted P(first beats second) when it has one, or None when it has nothing to offer (then the next
strategy of the mix is tried). `PairContext` gives it the open connection, the rater, a seeded RNG, the
scorer, and helpers that already respect the rules every strategy must keep:

- never an image against itself, never an image flagged broken;
- never a pair this rater already judged (undone judgements don't count), except `repeat`, which exists to
  show a judged pair again and measure self-consistency;
- with `ctx.among` (an `ImageSet`, e.g. the images the model made this round), only images of that set: the
  helpers' `ctx.usable(...)` clause says which images may be shown.

Built in: `random`, `same_prompt`, `balanced`, `uncertain`, `bald` and `epig` (the last three need a
scorer), and `repeat`.

## The scorer protocol (for `uncertain`, `bald`, `epig`)

    scorer(images: list[prefs.models.Image]) -> (means, stds) or (means, stds, members)

`means[i]` is image i's utility on the Bradley-Terry logit scale (P(i beats j) = sigmoid(m_i - m_j)), and
`stds[i]` its uncertainty on the same scale (for an ensemble: the standard deviation of the members'
utilities), or `stds` is None for a point estimate. Both are sequences of floats as long as `images`. An
ensemble should also return `members`, a K x N array of each member's utilities: K joint samples of the
utilities, which keep what per-image stds lose, that members err together on similar images. The images
are detached rows: use `image.sha256` as a cache key and `Store.image_path(image)` to read pixels.

## The active strategies

Each scores `UNCERTAIN_CANDIDATES` random images per call and ranks their unjudged pairs.

- `uncertain` (uncertainty sampling, Lewis & Gale 1994): the pair whose predicted win probability is
  closest to even odds. With members, the probability is the members' mean of p_k = sigmoid(u_k[a] -
  u_k[b]); with stds only, MacKay's moderated probability (`moderated_p`); ties go to the pair the members
  dispute most (BALD). This is the default active rule because it measured best: on the reward benchmark
  (`bench/bench_reward.py`, 8 simulated raters 90% consistent with each built-in oracle) its accuracy at
  300 judgements reached random pairs' accuracy at 400 on six oracles and came within 0.003 on the
  seventh; EPIG fell 0.007-0.038 short on all seven (2 raters).
- `bald`: the pair whose answer tells the most about the utilities, H[E p] - E[H p] (Houlsby et al. 2011;
  over members as in Beluch et al. 2018; from stds, p = sigmoid(d) for d ~ N(m_a - m_b, s_a^2 + s_b^2) by
  Gauss-Hermite quadrature).
- `epig`: the pair whose answer tells the most about the answers to other pairs (Bickford Smith et al.
  2023), from the members' joint predictions; with stds only it is `bald`.

Why not the information-based rules by default: on the benchmark they tracked random pair selection rather
than beating it (EPIG: 2 raters; experiment reward-epig in docs/experiments.md). Their scores rest on the
members' disagreement, and bootstrap heads fitted on a few hundred noisy votes disagree most where each has
fitted different noise; the members' mean probability is the steadier signal. On oracles with two utility
levels (`warm`, `cool`) every rule spends many questions on pairs of equally liked images, whose answers are
coin flips: 19% of uncertain's pairs and 29% of EPIG's had distinct utilities on `warm`, against 45% of
random pairs (experiment reward-uncertainty-sampling).

Without members or stds (point estimates) all three reduce to the pair closest to even odds. Wrap an
expensive scorer in `ScoreCache` so each image is scored once; `ScoreTable` serves a precomputed
`{sha256: (mean, std)}` table.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np
from sqlalchemy import Connection, func, select, true
from sqlalchemy.orm import Session

from prefs.errors import UserError
from prefs.models import Image, JudgementRow

Candidate = tuple[int, int, "float | None"]
DEFAULT_REPEAT_SHARE = 0.05  # share of pairs shown again to measure a rater's self-consistency
RANDOM_TRIES = 30  # random draws before falling back to enumerating a small pool
EXHAUSTIVE_MAX_IMAGES = 600  # enumerate all pairs when the pool is this small (up to ~180k pairs)
UNCERTAIN_CANDIDATES = 48  # images scored per `uncertain` / `bald` / `epig` call: 1,128 pairs to rank
REPEAT_MIN_GAP = 10  # a repeated pair is at least this many votes old, so the rater doesn't remember it
BALANCED_POOL = 64  # the least-judged images among which `balanced` pairs


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """The pool images pairs may come from: those generated with LoRA `lora` (a run id such as `t0003`, as images
    record it; None: generated without a LoRA, the base model's), by `model` (the model spec images record; None:
    any model). `rlft loop` asks for the images of each round's model, so the rater judges what the model makes
    now."""

    lora: str | None = None
    model: str | None = None

    def clause(self, table=None):
        """SQL condition on `table` (the images table or an alias of it) selecting the set's rows."""
        c = (table if table is not None else Image.__table__).c
        cond = c.lora == self.lora if self.lora is not None else (c.lora.is_(None) & (c.origin == "generated"))
        return cond if self.model is None else cond & (c.model == self.model)

    def __str__(self) -> str:
        made_by = f"{self.model} + {self.lora}" if self.model and self.lora else self.lora or self.model or "the base model"
        return f"the images of {made_by}" + (" (no LoRA)" if self.lora is None and self.model else "")


class NoPairError(UserError):
    """No pair can be shown: too few usable images, or the rater has judged every pair."""


class Scorer(Protocol):
    """Scores images for the scored strategies (`uncertain`, `bald`, `epig`); see the module docstring."""

    def __call__(self, images: list[Image]) -> tuple[Sequence[float], Sequence[float] | None] | tuple[
        Sequence[float], Sequence[float] | None, Sequence[Sequence[float]]]: ...


class ScoreTable:
    """A scorer backed by a precomputed `{sha256: (mean, std)}` table (unknown images score (0, 1))."""

    def __init__(self, table: Mapping[str, tuple[float, float]], default: tuple[float, float] = (0.0, 1.0)):
        self.table = dict(table)
        self.default = default

    def __call__(self, images):
        rows = [self.table.get(im.sha256, self.default) for im in images]
        return [r[0] for r in rows], [r[1] for r in rows]


class ScoreCache:
    """Memoises a scorer per image sha256, so each image is scored once (call `clear()` after refitting).

    Keeps the scorer's ensemble members when it returns them (`(means, stds, members)`) and returns them too.
    """

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.table: dict[str, tuple[float, float]] = {}
        self.members: dict[str, np.ndarray] = {}

    def clear(self) -> None:
        self.table.clear()
        self.members.clear()

    def __call__(self, images):
        missing = list({im.sha256: im for im in images if im.sha256 not in self.table}.values())
        if missing:
            means, stds, members = split_scores(self.scorer(missing))
            stds = stds if stds is not None else [0.0] * len(missing)
            for k, (im, m, s) in enumerate(zip(missing, means, stds, strict=False)):
                self.table[im.sha256] = (float(m), float(s))
                if members is not None:
                    self.members[im.sha256] = members[:, k]
        rows = [self.table[im.sha256] for im in images]
        means, stds = [r[0] for r in rows], [r[1] for r in rows]
        if images and all(im.sha256 in self.members for im in images):
            return means, stds, np.stack([self.members[im.sha256] for im in images], axis=1)
        return means, stds


def split_scores(out) -> tuple[Sequence[float], Sequence[float] | None, np.ndarray | None]:
    """A scorer's `(means, stds)` or `(means, stds, members)` as (means, stds, K x N float array or None)."""
    if len(out) == 2:
        return out[0], out[1], None
    means, stds, members = out
    return means, stds, (None if members is None else np.asarray(members, dtype=float))


@dataclasses.dataclass
class PairContext:
    """What a strategy may use. `rater_id` is None for a rater who has not voted yet."""

    conn: Connection
    rater_id: int | None
    rng: random.Random
    scorer: Scorer | None = None
    among: ImageSet | None = None  # pairs only from these images (None: the whole pool)

    def usable(self, table=None):
        """SQL condition on `table` (default: the images table) for an image that may be shown: not flagged broken,
        and in `among` when set."""
        c = (table if table is not None else Image.__table__).c
        cond = c.broken_at.is_(None)
        return cond if self.among is None else cond & self.among.clause(table)

    # -- helpers every strategy should use, so the rules hold -----------------------------------------
    def judged(self, x: int, y: int) -> bool:
        """Has this rater a standing (not undone) judgement of the pair {x, y}?"""
        if self.rater_id is None:
            return False
        q = (
            select(JudgementRow.id)
            .where(
                JudgementRow.rater_id == self.rater_id,
                JudgementRow.image_a_id.in_((x, y)),
                JudgementRow.image_b_id.in_((x, y)),
                JudgementRow.undone_at.is_(None),
            )
            .limit(1)
        )
        return self.conn.execute(q).first() is not None

    def ok(self, x: int | None, y: int | None) -> bool:
        return x is not None and y is not None and x != y and not self.judged(x, y)

    def load_images(self, ids: Sequence[int]) -> dict[int, Image]:
        """Image rows by id (detached: safe to keep and hand to a scorer)."""
        with Session(bind=self.conn, expire_on_commit=False) as s:
            rows = s.scalars(select(Image).where(Image.id.in_(list(ids)))).all()
            s.expunge_all()
        return {im.id: im for im in rows}

    def id_range(self) -> tuple[int, int] | None:
        # Two queries: SQLite answers a lone min() or max() from the index, but scans for both at once.
        where = self.among.clause() if self.among is not None else true()
        lo = self.conn.execute(select(func.min(Image.id)).where(where)).scalar()
        hi = self.conn.execute(select(func.max(Image.id)).where(where)).scalar()
        return None if lo is None else (lo, hi)

    def random_image(self, id_range: tuple[int, int] | None = None) -> int | None:
        """A random usable image id (the first usable id at or after a uniform draw: O(log n), near-uniform)."""
        id_range = id_range or self.id_range()
        if id_range is None:
            return None
        r = self.rng.randint(*id_range)
        usable = self.usable()
        row = self.conn.execute(select(Image.id).where(Image.id >= r, usable).order_by(Image.id).limit(1)).first()
        if row is None:  # wrap around
            row = self.conn.execute(select(Image.id).where(usable).order_by(Image.id).limit(1)).first()
        return row[0] if row else None

    def random_images(self, k: int, id_range: tuple[int, int] | None = None) -> list[int]:
        """Up to `k` distinct random usable image ids, fetched with one query (ids are dense: images are never
        deleted), topped up one at a time where draws hit gaps or broken images."""
        id_range = id_range or self.id_range()
        if id_range is None:
            return []
        draws = list(dict.fromkeys(self.rng.randint(*id_range) for _ in range(k + k // 4 + 2)))
        found = set(self.conn.execute(select(Image.id).where(Image.id.in_(draws), self.usable())).scalars())
        out = [d for d in draws if d in found][:k]
        for _ in range(2 * k):
            if len(out) >= k:
                break
            x = self.random_image(id_range)
            if x is None:
                break
            if x not in out:
                out.append(x)
        return out

    def usable_ids(self, limit: int) -> list[int] | None:
        """All usable image ids when there are at most `limit` of them, else None."""
        rows = self.conn.execute(select(Image.id).where(self.usable()).limit(limit + 1)).scalars().all()
        return None if len(rows) > limit else list(rows)

    def unjudged_pair_among(self, ids: Sequence[int]) -> Candidate | None:
        """A uniformly random unjudged pair among `ids` (enumerates; for small sets)."""
        ids = list(ids)
        if len(ids) < 2:
            return None
        done: set[tuple[int, int]] = set()
        if self.rater_id is not None:
            q = select(JudgementRow.image_a_id, JudgementRow.image_b_id).where(
                JudgementRow.rater_id == self.rater_id, JudgementRow.undone_at.is_(None)
            )
            if len(ids) <= 500:
                q = q.where(JudgementRow.image_a_id.in_(ids), JudgementRow.image_b_id.in_(ids))
            done = {(min(a, b), max(a, b)) for a, b in self.conn.execute(q)}
        ids.sort()
        free = [(x, y) for i, x in enumerate(ids) for y in ids[i + 1:] if (x, y) not in done]
        if not free:
            return None
        x, y = self.rng.choice(free)
        return x, y, None


def usable_count(conn: Connection, among: ImageSet | None = None) -> int:
    """How many images may be shown: not flagged broken, and in `among` when given."""
    ctx = PairContext(conn, None, random.Random(0), among=among)
    return int(conn.execute(select(func.count(Image.id)).where(ctx.usable())).scalar() or 0)


StrategyFn = Callable[[PairContext], "Candidate | None"]
STRATEGIES: dict[str, StrategyFn] = {}


SCORED_STRATEGIES: set[str] = set()  # strategies that read ctx.scorer: callers must pass one (see needs_scorer)


def register_strategy(name: str, *, needs_scorer: bool = False):
    """Decorator: register `fn(ctx) -> Candidate | None` as a pair-selection strategy called `name`.

    `needs_scorer=True` for a strategy that reads `ctx.scorer`: the UI, `rlft simulate` and `rlft loop` then
    hand it the reward model's scorer whenever the strategy is in the mix."""

    def deco(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = fn
        (SCORED_STRATEGIES.add if needs_scorer else SCORED_STRATEGIES.discard)(name)
        return fn

    return deco


@register_strategy("random")
def random_pair(ctx: PairContext) -> Candidate | None:
    """Two uniformly random usable images."""
    id_range = ctx.id_range()
    if id_range is None:
        return None
    for _ in range(RANDOM_TRIES):
        x, y = ctx.random_image(id_range), ctx.random_image(id_range)
        if ctx.ok(x, y):
            return x, y, None
    small = ctx.usable_ids(EXHAUSTIVE_MAX_IMAGES)
    return ctx.unjudged_pair_among(small) if small is not None else None


@register_strategy("same_prompt")
def same_prompt_pair(ctx: PairContext) -> Candidate | None:
    """Two images of one prompt (seeds/variants), as preference datasets compare them.

    Draws a random image and pairs it with a sibling of the same prompt, so prompts with more images are
    compared more often. Returns None when no prompt has an unjudged pair within the tries.
    """
    id_range = ctx.id_range()
    if id_range is None:
        return None
    for _ in range(RANDOM_TRIES):
        x = ctx.random_image(id_range)
        if x is None:
            return None
        h = ctx.conn.execute(select(Image.prompt_hash).where(Image.id == x)).scalar_one()
        siblings = ctx.conn.execute(
            select(Image.id).where(Image.prompt_hash == h, Image.id != x, ctx.usable()).limit(200)
        ).scalars().all()
        ctx.rng.shuffle(siblings := list(siblings))
        for y in siblings[:8]:
            if ctx.ok(x, y):
                return x, y, None
    return None


@register_strategy("balanced")
def balanced_pair(ctx: PairContext) -> Candidate | None:
    """The unjudged pair of the least-judged images (ties broken at random), so coverage grows evenly."""
    rows = ctx.conn.execute(
        select(Image.id, Image.n_judgements).where(ctx.usable())
        .order_by(Image.n_judgements, Image.id).limit(BALANCED_POOL)
    ).all()
    rows = list(rows)
    ctx.rng.shuffle(rows)
    ids = [r[0] for r in sorted(rows, key=lambda r: r[1])]  # stable: random order within a count
    checks = 0
    for i, x in enumerate(ids):
        for y in ids[i + 1:]:
            if ctx.ok(x, y):
                return x, y, None
            checks += 1
            if checks > 4 * RANDOM_TRIES:
                return ctx.unjudged_pair_among(ids)
    return None


def moderated_p(mean_a: float, mean_b: float, std_a: float = 0.0, std_b: float = 0.0) -> float:
    """P(a beats b) averaged over Gaussian utility uncertainty (MacKay's probit approximation)."""
    kappa = 1.0 / math.sqrt(1.0 + math.pi * (std_a**2 + std_b**2) / 8.0)
    return 1.0 / (1.0 + math.exp(-(mean_a - mean_b) * kappa))


_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(24)  # nodes/weights for E over a standard normal
_GH_W = _GH_W / _GH_W.sum()


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)  # float32 would round 1 - 1e-12 up to 1: 0 * log 0
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def pair_information(dm: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Expected information (bits) from judging pairs with utility gap d ~ N(dm, var): H[E p] - E[H p]."""
    dm, var = np.asarray(dm, dtype=float), np.asarray(var, dtype=float)
    d = dm[..., None] + np.sqrt(np.maximum(var, 0.0))[..., None] * _GH_X
    p = 1.0 / (1.0 + np.exp(-np.clip(d, -60, 60)))
    info = _entropy_bits(p @ _GH_W) - _entropy_bits(p) @ _GH_W
    return np.maximum(info, 0.0)


def pair_epig(pa: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """Expected predictive information gain (bits) of judging each candidate pair, from joint samples.

    `pa`: K x P win probabilities of the candidate pairs under K posterior samples (ensemble members); `pt`:
    K x M the same for target pairs, drawn from the pairs the model will be asked about. Returns, per candidate,
    the mutual information between its answer and a target pair's answer, averaged over targets:
    E_t I(y_c; y_t) (EPIG, Bickford Smith et al. 2023), where the joint of the two binary answers is the
    members' average of p_k(y_c) p_k(y_t).
    """
    k = pa.shape[0]
    ma, mt = pa.mean(0), pt.mean(0)  # P, M
    p11 = pa.T @ pt / k  # P x M
    info = np.zeros(pa.shape[1])
    for joint, marg_a, marg_t in ((p11, ma[:, None], mt[None, :]),
                                 (ma[:, None] - p11, ma[:, None], 1 - mt[None, :]),
                                 (mt[None, :] - p11, 1 - ma[:, None], mt[None, :]),
                                 (1 - ma[:, None] - mt[None, :] + p11, 1 - ma[:, None], 1 - mt[None, :])):
        joint = np.clip(joint, 1e-12, 1.0)
        info += (joint * np.log2(joint / np.clip(marg_a * marg_t, 1e-12, 1.0))).mean(1)
    return np.maximum(info, 0.0)


def needs_scorer(strategy: StrategyMix | str | Mapping[str, float] | None) -> bool:
    """Does a mix use a scored strategy? None (the store's default mix) never does. A name, mix text or dict
    is read with `parse_mix`, so an unknown name raises UserError; callers that ask per pair pass the
    `StrategyMix` they parsed once."""
    return bool(strategy) and parse_mix(strategy).needs_scorer


EPIG_TARGETS = 256  # target pairs (random pairs of the candidates) EPIG averages over
EPIG_SHORTLIST = 96  # candidate pairs, highest in BALD, that EPIG ranks


def _informative_pair(ctx: PairContext, objective: str, strategy: str) -> Candidate | None:
    """The best unjudged pair among random candidates under `objective`: "even" (closest to even odds, ties
    to the most disputed), "bald" or "epig" (most informative, ties to the closest to even odds)."""
    if ctx.scorer is None:
        raise UserError(f"the {strategy!r} strategy needs a scorer (a reward model); pass scorer=... to next_pair")
    id_range = ctx.id_range()
    if id_range is None:
        return None
    ids = ctx.random_images(UNCERTAIN_CANDIDATES, id_range)
    if len(ids) < 2:
        return None
    rows = ctx.load_images(ids)
    images = [rows[i] for i in ids]
    means, stds, members = split_scores(ctx.scorer(images))
    m = np.asarray(means, dtype=float)
    s = np.zeros_like(m) if stds is None else np.asarray(stds, dtype=float)
    if m.shape != (len(images),) or s.shape != m.shape or (members is not None and (
            members.ndim != 2 or members.shape[1] != len(images))):
        raise ValueError(f"scorer returned {m.shape} means, {s.shape} stds and "
                         f"{None if members is None else members.shape} members for {len(images)} images")
    iu, ju = np.triu_indices(len(ids), 1)
    if members is not None and len(members) > 1:
        members = np.asarray(members, dtype=np.float64)  # float32 probabilities saturate to exactly 0 and 1
        pk = 1.0 / (1.0 + np.exp(-np.clip(members[:, iu] - members[:, ju], -60, 60)))  # K x pairs
        pij = pk.mean(0)
        info = np.maximum(_entropy_bits(pij) - _entropy_bits(pk).mean(0), 0.0)  # BALD
        if objective == "epig":
            # EPIG <= BALD (the answers are independent given the utilities), so only the pairs highest in BALD can
            # top EPIG. The candidates are a uniform sample of the pool, so their pairs stand for the pairs the
            # model will be asked about.
            top = np.argsort(-info, kind="stable")[:EPIG_SHORTLIST]
            t = ctx.rng.sample(range(len(iu)), min(EPIG_TARGETS, len(iu)))
            epig = np.zeros_like(info)
            epig[top] = pair_epig(pk[:, top], pk[:, t]) + 1e-9  # the shortlist ranks above every other pair
            info = epig
    else:
        var = s[:, None] ** 2 + s[None, :] ** 2
        dm = m[:, None] - m[None, :]
        kappa = 1.0 / np.sqrt(1.0 + np.pi * var / 8.0)
        pij = (1.0 / (1.0 + np.exp(-dm * kappa)))[iu, ju]
        info = pair_information(dm[iu, ju], var[iu, ju]) if np.any(s > 0) else np.zeros_like(pij)
    gap = np.abs(pij - 0.5)
    order = np.lexsort((-info, gap) if objective == "even" else (gap, -info))  # the last key sorts first
    for k in order[:50]:
        i, j = int(iu[k]), int(ju[k])
        if ctx.ok(ids[i], ids[j]):
            return ids[i], ids[j], float(pij[k])
    return None


@register_strategy("uncertain", needs_scorer=True)
def uncertain_pair(ctx: PairContext) -> Candidate | None:
    """The unjudged pair, among random candidates, whose predicted win probability is closest to even odds
    (uncertainty sampling; ensemble-mean or moderated probability; ties to the pair the members dispute most)."""
    return _informative_pair(ctx, "even", "uncertain")


@register_strategy("bald", needs_scorer=True)
def bald_pair(ctx: PairContext) -> Candidate | None:
    """The unjudged pair, among random candidates, whose answer tells the most about the utilities (BALD)."""
    return _informative_pair(ctx, "bald", "bald")


@register_strategy("epig", needs_scorer=True)
def epig_pair(ctx: PairContext) -> Candidate | None:
    """The unjudged pair, among random candidates, whose answer tells the most about the answers to other pairs
    (EPIG over ensemble members; BALD from per-image stds)."""
    return _informative_pair(ctx, "epig", "epig")


@register_strategy("repeat")
def repeat_pair(ctx: PairContext) -> Candidate | None:
    """A pair this rater judged (a/b/tie) at least REPEAT_MIN_GAP votes ago, shown again."""
    if ctx.rater_id is None:
        return None
    mine = JudgementRow.rater_id == ctx.rater_id
    newest_allowed = ctx.conn.execute(
        select(JudgementRow.id).where(mine).order_by(JudgementRow.id.desc()).offset(REPEAT_MIN_GAP).limit(1)
    ).scalar()
    if newest_allowed is None:
        return None
    lo = ctx.conn.execute(select(func.min(JudgementRow.id)).where(mine)).scalar()
    ImA, ImB = Image.__table__.alias("ia"), Image.__table__.alias("ib")
    for _ in range(10):
        r = ctx.rng.randint(lo, newest_allowed)
        row = ctx.conn.execute(
            select(JudgementRow.image_a_id, JudgementRow.image_b_id)
            .join(ImA, ImA.c.id == JudgementRow.image_a_id)
            .join(ImB, ImB.c.id == JudgementRow.image_b_id)
            .where(
                mine,
                JudgementRow.id >= r,
                JudgementRow.id <= newest_allowed,
                JudgementRow.undone_at.is_(None),
                JudgementRow.outcome.in_(("a", "b", "tie")),
                ctx.usable(ImA),
                ctx.usable(ImB),
            )
            .order_by(JudgementRow.id)
            .limit(1)
        ).first()
        if row is not None:
            return row[0], row[1], None
    return None


# ------------------------------------------------------------------------------------------------------
# Mixing


class StrategyMix(Mapping[str, float]):
    """A checked pair-strategy mix: registered strategy names -> weights summing to 1, in the order given.

    Immutable and hashable. It is made once where a mix enters (the CLI's `--strategy`, `parse_mix`) and then
    passed as it is to `Store.next_pair`, `needs_scorer`, the rating session and the simulated rater, so no
    pair re-reads the text. `str(mix)` is mix text that `parse_mix` reads back to the same mix.
    Raises UserError for an empty mix, an unknown name (listing the valid ones) or a weight that is not a
    positive number.
    """

    __slots__ = ("_weights",)

    def __init__(self, weights: Mapping[str, float]):
        weights = {str(k): float(v) for k, v in weights.items()}
        if not weights:
            raise UserError(f"no pair strategy given; valid: {', '.join(sorted(STRATEGIES))}")
        unknown = [n for n in weights if n not in STRATEGIES]
        if unknown:
            raise UserError(f"unknown pair strategy {unknown[0]!r}; valid: {', '.join(sorted(STRATEGIES))}")
        if any(not math.isfinite(w) or w <= 0 for w in weights.values()):
            raise UserError(f"strategy weights must be positive numbers, got {weights}")
        total = sum(weights.values())
        object.__setattr__(self, "_weights", {n: w / total for n, w in weights.items()})

    def __setattr__(self, name, value):
        raise AttributeError("a StrategyMix is immutable")

    def __getitem__(self, name: str) -> float:
        return self._weights[name]

    def __iter__(self):
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def __hash__(self) -> int:
        return hash(frozenset(self._weights.items()))

    def __reduce__(self):  # copy and pickle through __init__ (the slot is read-only)
        return StrategyMix, (dict(self._weights),)

    def __repr__(self) -> str:
        return f"StrategyMix({self._weights!r})"

    def __str__(self) -> str:
        if len(self._weights) == 1:
            return next(iter(self._weights))
        return ",".join(f"{n}:{w!r}" for n, w in self._weights.items())

    @property
    def needs_scorer(self) -> bool:
        """Whether a strategy of the mix reads `ctx.scorer` (looked up now: registration may change)."""
        return any(n in SCORED_STRATEGIES for n in self._weights)


def parse_mix(spec: StrategyMix | str | Mapping[str, float] | None,
              default: Mapping[str, float] | None = None) -> StrategyMix:
    """Read `"uncertain:0.7,balanced:0.25,repeat:0.05"`, `"random"` or a dict as a `StrategyMix` (weights
    normalised; a name without a weight weighs 1). A StrategyMix comes back as it is. An empty spec gives
    `default`, or UserError when there is none.

    Unknown names and non-positive or non-numeric weights raise UserError listing the valid names.
    """
    if isinstance(spec, StrategyMix):
        return spec
    if not spec or (isinstance(spec, str) and not spec.strip()):
        if default is None:
            raise UserError(f"no pair strategy given; valid: {', '.join(sorted(STRATEGIES))}")
        return parse_mix(default)
    if not isinstance(spec, str):
        return StrategyMix(spec)
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, _, w = part.strip().partition(":")
        try:
            weights[name.strip()] = float(w) if w else 1.0
        except ValueError:
            raise UserError(f"bad weight {w!r} for strategy {name!r}: write NAME:WEIGHT, e.g. uncertain:0.7") from None
    return StrategyMix(weights)


def choose(ctx: PairContext, mix: Mapping[str, float]) -> tuple[str, Candidate]:
    """Draw a strategy by weight and run it; if it has nothing, try the others (heaviest first), then random.

    Raises NoPairError when no strategy finds a pair.
    """
    names = list(mix)
    first = ctx.rng.choices(names, weights=[mix[n] for n in names])[0]
    order = [first] + sorted((n for n in names if n != first), key=lambda n: -mix[n])
    if "random" not in order:
        order.append("random")
    for name in order:
        if name == "repeat" and name != first:
            continue  # repeats are a deliberate share, not a fallback: a fallback repeat breaks "never twice"
        found = STRATEGIES[name](ctx)
        if found is not None:
            return name, found
    if ctx.among is not None:
        raise NoPairError(f"no new pair to show among {ctx.among}: fewer than 2 of them are usable, or this rater "
                          "has judged every pair of them")
    raise NoPairError("no new pair to show: the pool has fewer than 2 usable images, or this rater has judged every pair")
