"""One rater's stream of pairs in one browser session: what is shown, the prefetched next pair, votes, undo.

No Gradio here, so the rules are unit-tested without a server. Every vote goes through
`Store.record_judgement`; the browser only ever sends back the token of the pair it shows (the pair's
`client_vote_id`), never image ids, so nothing it sends can write anything else.

Why tokens: the token identifies the pair on screen. A vote whose token is not the pair this session shows
is either a retry of a vote already recorded (double click, network retry: recorded once, thanks to the
idempotent `client_vote_id`) or comes from a page that outlived its server session (restart, stale tab):
both get a clear message and write nothing.

A page with no pair on screen (every pair judged) sends no token; new images arriving in the pool are offered
by `poll`, which the page calls while it waits.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import threading
import time
import uuid
from concurrent.futures import Executor, Future
from typing import Callable

from prefs.errors import NotFoundError, UserError
from prefs.records import Pair
from prefs.samplers import NoPairError, StrategyMix, parse_mix
from ui import tally

log = logging.getLogger(__name__)

SIDES = {"left": "a", "right": "b", "tie": "tie", "both_bad": "both_bad", "skip": "skip"}
"""Button/key -> outcome. The left image is always `pair.a` (next_pair already randomised the sides)."""
MIN_DECISION_MS = 250  # a vote sooner than this after the pair appeared is a double click or key repeat
RECENT_TOKENS = 64  # tokens of recent votes remembered, to tell a retry from a stale page


@dataclasses.dataclass(frozen=True)
class Shown:
    """The pair on screen: `token` is the vote's client_vote_id; `shown_at` is monotonic seconds."""

    token: str
    pair: Pair
    shown_at: float


@dataclasses.dataclass(frozen=True)
class View:
    """What the page shows after an action."""

    shown: Shown | None  # None: nothing left to rate
    upcoming: Pair | None  # the prefetched next pair (its images can be preloaded by the browser)
    count: int  # votes in this browser session (undo takes one back)
    message: str = ""  # the outcome of the last action, or why it did nothing
    ok: bool = True  # False when the action was refused (the message says why)
    saved: str = ""  # what the last action recorded ("left better"); empty when it recorded nothing
    tally: tally.Tally | None = None  # the rater's standing (judged in all, pairs left), when counted

    @property
    def exhausted(self) -> bool:
        """Nothing to show: this rater has judged every pair of the pool."""
        return self.shown is None


def pair_key(pair: Pair) -> frozenset[str]:
    return frozenset((pair.a.sha256, pair.b.sha256))


class RateSession:
    """A rater's pair stream with one pair prefetched in the background.

    `store`: a `prefs.Store`; `rater`: whose votes; `strategy`: the `StrategyMix` passed to every `next_pair`
    (mix text or a dict is parsed once, here; None: the store's default mix); `scorer`: a
    callable returning the current scorer for `uncertain` (or None); `executor`: where prefetching runs
    (None: synchronously, for tests); `on_timing`: called with the milliseconds from a vote's arrival to
    the next pair being ready; `clock`: monotonic seconds (tests pass a fake).
    """

    def __init__(self, store, rater: str, *, strategy: StrategyMix | str | None = None,
                 scorer: Callable[[], object] | None = None,
                 executor: Executor | None = None, min_decision_ms: int = MIN_DECISION_MS,
                 on_timing: Callable[[float], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 seed: int | None = None):
        if not rater or not rater.strip():
            raise UserError("rater name must not be empty")
        self.store = store
        self.rater = rater.strip()
        self.strategy = parse_mix(strategy) if strategy else None
        self.scorer = scorer or (lambda: None)
        self.executor = executor
        self.min_decision_ms = min_decision_ms
        self.on_timing = on_timing
        self.clock = clock
        self.rng = random.Random(seed)
        self.count = 0
        self.shown: Shown | None = None
        self._upcoming: collections.deque[Pair] = collections.deque()
        self._prefetch: Future | None = None
        self._judged: set[frozenset[str]] = set()  # pairs judged in this session (a prefetch may predate them)
        self._recent: collections.OrderedDict[str, str] = collections.OrderedDict()  # token -> outcome
        self._lock = threading.RLock()  # one action at a time per session
        self._qlock = threading.Lock()  # the prefetch queue (the prefetch thread never takes _lock)
        self.exhausted = False
        self._tally: tuple[int, tally.Tally] | None = None  # (self.count when counted, the count)

    # -- pairs ------------------------------------------------------------------------------------------
    def _draw(self) -> Pair | None:
        try:
            return self.store.next_pair(self.rater, self.strategy, scorer=self.scorer(), rng=self.rng)
        except NoPairError:
            return None

    def _usable(self, pair: Pair) -> bool:
        return pair.repeat or pair_key(pair) not in self._judged

    def _take_next(self) -> Pair | None:
        """The prefetched pair if still usable, else one drawn now."""
        fut = self._prefetch
        if fut is not None:
            try:
                fut.result(timeout=5)  # normally long done: it started when the current pair was shown
            except Exception:  # a failed prefetch only costs a synchronous draw
                log.exception("prefetch failed")
        with self._qlock:
            while self._upcoming:
                pair = self._upcoming.popleft()
                if self._usable(pair):
                    return pair
        for _ in range(3):  # the store excludes pairs judged before; the loop covers a racing prefetch
            pair = self._draw()
            if pair is None or self._usable(pair):
                return pair
        return None

    def _fill(self) -> None:
        pair = self._draw()
        with self._qlock:
            if pair is not None and not self._upcoming:
                self._upcoming.append(pair)
        self._count_tally()

    def _count_tally(self) -> None:
        """Recount the rater's standing (in the background: the page shows the last count, corrected by the
        votes since, so no key press waits for it)."""
        at = self.count
        try:
            self._tally = (at, tally.count(self.store.engine, self.rater))
        except Exception:  # a count is a courtesy: never let it break rating
            log.exception("could not count the rater's pairs")

    def current_tally(self) -> tally.Tally | None:
        """The last count, moved on by the votes (and undos) of this session since it was taken."""
        if self._tally is None:
            return None
        at, t = self._tally
        delta = self.count - at
        return tally.Tally(max(0, t.judged + delta), max(0, t.left_same_prompt - delta), max(0, t.left_all - delta))

    def _schedule_prefetch(self) -> None:
        if self._upcoming or (self._prefetch is not None and not self._prefetch.done()):
            return
        if self.executor is None:
            self._fill()
        else:
            self._prefetch = self.executor.submit(self._fill)

    def _show(self, pair: Pair | None) -> None:
        self.exhausted = pair is None
        self.shown = Shown(uuid.uuid4().hex, pair, self.clock()) if pair is not None else None
        if pair is not None:
            self._schedule_prefetch()

    def _view(self, message: str = "", ok: bool = True, saved: str = "") -> View:
        upcoming = self._upcoming[0] if self._upcoming else None
        if self.exhausted and not message:
            message = "Nothing left to rate: you have judged every pair of the pool."
        return View(self.shown, upcoming, self.count, message, ok, saved, self.current_tally())

    # -- actions ----------------------------------------------------------------------------------------
    def start(self) -> View:
        """Show the first pair (or the current one again, e.g. after a page reload in the same session)."""
        with self._lock:
            if self.shown is None:
                self._show(self._take_next())
            if self._tally is None:
                self._count_tally()  # once, so the first screen already says how much there is to rate
            return self._view()

    def poll(self) -> View | None:
        """While nothing is on screen (every pair judged), look for a new pair: a View when images arrived
        since, else None (the page stays as it is)."""
        with self._lock:
            if self.shown is not None:
                return None
            self._show(self._take_next())
            if self.shown is None:
                return None
            self._count_tally()
            return self._view("New images arrived: here is a pair.")

    def vote(self, token: str, side: str) -> View:
        """Record a vote for the pair with `token`, shown on screen, and move on to the next pair."""
        arrived = self.clock()
        if side not in SIDES:
            raise UserError(f"invalid vote {side!r}; valid: {', '.join(SIDES)}")
        with self._lock:
            shown = self.shown
            if shown is None or token != shown.token:
                if token in self._recent:
                    return self._view("Already recorded (double click?): counted once.", ok=False)
                if shown is None:
                    # Nothing was on screen: every pair judged (new images may have arrived since), or the session
                    # never showed one. Either way this vote recorded nothing.
                    was_exhausted = self.exhausted
                    self._show(self._take_next())
                    if self.shown is None:
                        return self._view("Nothing to vote on: you have judged every pair of the pool. "
                                          "Vote not recorded.", ok=False)
                    if was_exhausted:
                        return self._view("New images arrived: here is a pair (that vote was not recorded: "
                                          "no pair was on screen).", ok=False)
                    return self._view("No pair was on screen yet: vote not recorded. Here is one.", ok=False)
                return self._view("That pair is no longer on screen here: vote not recorded. Here is the "
                                  "current pair.", ok=False)
            decision_ms = int(round((arrived - shown.shown_at) * 1000))
            if decision_ms < self.min_decision_ms:
                return self._view(f"Ignored a vote {decision_ms} ms after the pair appeared (double click or "
                                  "held key?). Look, then vote.", ok=False)
            pair = shown.pair
            outcome = SIDES[side]
            try:
                self.store.record_judgement(
                    pair.a, pair.b, outcome, rater=self.rater, shown_left="a", client_vote_id=shown.token,
                    decision_ms=decision_ms, strategy=pair.strategy, predicted_p=pair.predicted_p,
                )
            except NotFoundError:
                self._show(self._take_next())
                return self._view("One of those images has left the pool; vote not recorded. Here is another pair.",
                                  ok=False)
            self.count += 1
            self._judged.add(pair_key(pair))
            self._recent[shown.token] = outcome
            while len(self._recent) > RECENT_TOKENS:
                self._recent.popitem(last=False)
            self._show(self._take_next())
            note = "That was a repeat of a pair you judged before (it measures your consistency)." if pair.repeat else ""
            view = self._view(note, saved=_describe(outcome, "a"))
        if self.on_timing is not None:
            self.on_timing((self.clock() - arrived) * 1000)
        return view

    def undo(self) -> View:
        """Take back this rater's latest vote and show that pair again, as it was shown."""
        with self._lock:
            j = self.store.undo_last(self.rater)
            if j is None:
                return self._view("Nothing to undo.", ok=False)
            try:
                a, b = self.store.get_image(j.image_a), self.store.get_image(j.image_b)
            except NotFoundError:
                return self._view("Undid your last vote (its images have left the pool).")
            left, right = (a, b) if j.shown_left != "b" else (b, a)
            p = j.predicted_p if j.shown_left != "b" or j.predicted_p is None else 1.0 - j.predicted_p
            again = Pair(left, right, j.strategy or "undo", p, repeat=False)
            if self.shown is not None:
                with self._qlock:
                    self._upcoming.appendleft(self.shown.pair)  # the pair on screen comes back next
            self._judged.discard(pair_key(again))
            self._recent.pop(j.client_vote_id, None)
            self.count = max(0, self.count - 1)
            self._show(again)
            return self._view(f"Undid your last vote ({_describe(j.outcome, j.shown_left)}). Vote again.")


def _describe(outcome: str, shown_left: str | None) -> str:
    if outcome in ("a", "b"):
        side = "left" if (outcome == shown_left or (shown_left is None and outcome == "a")) else "right"
        return f"{side} better"
    return {"tie": "tie", "both_bad": "both bad", "skip": "skipped"}[outcome]
