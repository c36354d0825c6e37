"""The Gradio Blocks app: Rate, Gallery and Progress tabs on one preference store.

`RatingApp` holds what the tabs share (the store, the prefetch threads, the scorers, vote timings);
`RatingApp.build()` returns the `gr.Blocks`. Launching (host, auth, routes, key script) is `ui.server`.

Vote handlers take the session (gr.State, server side), the token of the pair on screen (a hidden
textbox the page sends back) and the rater; see `ui.session` for why the token. Each button is also an
API endpoint (`/vote_left`, `/vote_right`, `/vote_tie`, `/vote_both_bad`, `/vote_skip`, `/undo`,
`/start`), which is how `bench/bench_ui.py` drives the server with `gradio_client`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import gradio as gr

from prefs.errors import UserError
from prefs.samplers import StrategyMix, needs_scorer, parse_mix
from ui import gallery, html, progress
from ui.scoring import Scores, reward_versions
from ui.session import MIN_DECISION_MS, RateSession, View

log = logging.getLogger(__name__)

MAX_RATER_NAME = 100
NAME_PROMPT = "Type your name and press Enter to start."
KEYS_HTML = ("<div class='rlft-keys'><kbd>1</kbd>/<kbd>&larr;</kbd> left better · <kbd>2</kbd>/<kbd>&rarr;</kbd> "
             "right better · <kbd>3</kbd>/<kbd>&darr;</kbd> tie · <kbd>4</kbd> both bad · <kbd>space</kbd>/<kbd>s</kbd> "
             "skip · <kbd>backspace</kbd>/<kbd>u</kbd> undo · click an image for full size</div>")
BUTTONS = (  # (side, elem_id, label)
    ("left", "rlft-left", "◀ Left better (1)"),
    ("tie", "rlft-tie", "Tie (3)"),
    ("both_bad", "rlft-bad", "Both bad (4)"),
    ("skip", "rlft-skip", "Skip (space)"),
    ("right", "rlft-right", "Right better (2) ▶"),
)


@dataclasses.dataclass
class AppConfig:
    """How the app behaves (the CLI fills it from flags)."""

    strategy: StrategyMix | None = None  # pair strategy mix for every rater (None: the store's default mix)
    rater: str | None = None  # a fixed rater name for every browser (--rater); else asked once per browser
    auth: bool = False  # raters are the --auth login names
    min_decision_ms: int = MIN_DECISION_MS  # faster votes are treated as double clicks
    gallery_limit: int = 200  # images shown in the gallery by default
    prefetch_threads: int = 4  # background pair selection, shared by all sessions

    def __post_init__(self):
        # Mix text or a dict from a library caller is read once, here; a StrategyMix stays as it is.
        self.strategy = parse_mix(self.strategy) if self.strategy else None


class RatingApp:
    """Shared state of one server; `build()` makes the Gradio app."""

    def __init__(self, store, config: AppConfig | None = None):
        self.store = store
        self.config = config or AppConfig()
        self.scores = Scores(store)
        self.executor = ThreadPoolExecutor(self.config.prefetch_threads, thread_name_prefix="rlft-prefetch")
        self.timings: collections.deque[float] = collections.deque(maxlen=1_000_000)  # ms, vote -> next pair ready
        self._timing_lock = threading.Lock()
        uses_scorer = needs_scorer(self.config.strategy)
        self._scorer = self.scores.pair_scorer if uses_scorer else (lambda: None)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- sessions ---------------------------------------------------------------------------------------
    def rater_for(self, name: str | None, request: gr.Request | None) -> str | None:
        """The rater a request votes as: the login name with --auth, the --rater name, else the typed name."""
        user = getattr(request, "username", None) if request is not None else None
        if self.config.auth and user:
            return str(user)
        if self.config.rater:
            return self.config.rater
        name = (name or "").strip()
        return name[:MAX_RATER_NAME] or None

    def new_session(self, rater: str) -> RateSession:
        return RateSession(self.store, rater, strategy=self.config.strategy, scorer=self._scorer,
                           executor=self.executor, min_decision_ms=self.config.min_decision_ms)

    def _record_timing(self, ms: float) -> None:
        with self._timing_lock:
            self.timings.append(ms)

    # -- handlers (plain functions of plain values: unit-tested without a browser) ------------------------
    def render(self, session: RateSession | None, view: View | None):
        """(session, pair html, prompt html, token, status markdown) for a view."""
        if session is None or view is None:
            return session, html.pair_html(None), "", "", ""
        token = view.shown.token if view.shown else ""
        status = f"**{view.count}** vote{'s' if view.count != 1 else ''} this session · rating as **{session.rater}**"
        if view.message:
            status += f"  \n{'' if view.ok else '⚠ '}{view.message}"
        return (session, html.pair_html(view.shown, view.upcoming), html.prompt_html(view.shown), token, status)

    def start(self, session, name, request: gr.Request | None = None):
        rater = self.rater_for(name, request)
        if rater is None:
            raise gr.Error("Type your name first: every vote is stored under it.")
        if session is None or session.rater != rater:
            session = self.new_session(rater)
        return self.render(session, session.start())

    def vote(self, side: str, session, token, name, request: gr.Request | None = None):
        t0 = time.perf_counter()
        if session is None:  # a page older than this server process: start over for the same rater
            rater = self.rater_for(name, request)
            if rater is None:
                raise gr.Error("This page is older than the server: reload it.")
            session = self.new_session(rater)
        try:
            view = session.vote(str(token or ""), side)
        except UserError as e:
            raise gr.Error(str(e)) from None
        out = self.render(session, view)
        if view.ok:
            self._record_timing((time.perf_counter() - t0) * 1000)
        return out

    def undo(self, session, name, request: gr.Request | None = None):
        if session is None:
            rater = self.rater_for(name, request)
            if rater is None:
                raise gr.Error("Nothing to undo.")
            session = self.new_session(rater)
        return self.render(session, session.undo())

    def gallery(self, prompt, search, limit):
        images = gallery.usable(self.store.images())
        scores, label = self.scores.rank(images)
        rows = gallery.ranked(images, scores, prompt, search or "", int(limit or self.config.gallery_limit))
        shown = f"{len(rows)} of {len(images)} images, ranked by **{label}**"
        return html.gallery_html(rows, "reward" if label.startswith("reward") else "BT"), shown

    def gallery_choices(self):
        images = gallery.usable(self.store.images())
        runs = gallery.run_choices(images)
        return (gr.update(choices=gallery.prompt_choices(images)),
                gr.update(choices=runs, value=runs[0] if runs else None),
                gr.update(choices=runs, value=runs[1] if len(runs) > 1 else None))

    def compare(self, run_a, run_b, prompt):
        images = gallery.usable(self.store.images())
        scores, label = self.scores.rank(images)
        rows = gallery.compare(images, scores, run_a, run_b, prompt)
        return html.compare_html(rows, run_a or "", run_b or "", "reward" if label.startswith("reward") else "BT")

    def progress(self):
        p = progress.compute(self.store, reward_versions())
        rewards = p.rewards.assign(n=[_version_number(v) for v in p.rewards["version"]])
        return p.summary, p.outcomes, p.raters, p.over_time, rewards

    # -- layout -----------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        cfg = self.config
        with gr.Blocks(title="rlft: rate images") as demo:
            session = gr.State(None)
            saved_name = gr.BrowserState("", storage_key="rlft-rater")
            with gr.Tabs():
                with gr.Tab("Rate", id="rate"):
                    with gr.Row(visible=not (cfg.auth or cfg.rater)) as name_row:
                        name = gr.Textbox(label="Your name (votes are stored under it)", elem_id="rlft-name",
                                          max_lines=1, max_length=MAX_RATER_NAME, scale=4, autofocus=True)
                        go = gr.Button("Start rating", elem_id="rlft-start", variant="primary", scale=1)
                    prompt_box = gr.HTML("", elem_id="rlft-prompt")
                    pair_box = gr.HTML(html.pair_html(None), elem_id="rlft-pair")
                    with gr.Row(equal_height=True):
                        buttons = {side: gr.Button(label, elem_id=eid, variant="primary" if side in ("left", "right") else "secondary",
                                                   min_width=90) for side, eid, label in BUTTONS}
                    with gr.Row():
                        status = gr.Markdown("" if (cfg.auth or cfg.rater) else NAME_PROMPT, elem_id="rlft-status")
                        undo = gr.Button("↶ Undo (u)", elem_id="rlft-undo", size="sm", scale=0, min_width=110)
                    gr.HTML(KEYS_HTML)
                    token = gr.Textbox("", visible=False, elem_id="rlft-token")
                with gr.Tab("Gallery", id="gallery") as gallery_tab:
                    with gr.Row():
                        prompt_pick = gr.Dropdown([gallery.ALL], value=gallery.ALL, label="Prompt", scale=3,
                                                  allow_custom_value=False)
                        search = gr.Textbox(label="Filter prompts (words)", max_lines=1, scale=2)
                        limit = gr.Slider(10, 1000, value=cfg.gallery_limit, step=10, label="Show", scale=1)
                    gallery_note = gr.Markdown("")
                    gallery_box = gr.HTML("", elem_id="rlft-gallery")
                    with gr.Accordion("Compare runs: the same prompts and seeds from two models or LoRA runs", open=False):
                        with gr.Row():
                            run_a = gr.Dropdown([], label="Run A", scale=2)
                            run_b = gr.Dropdown([], label="Run B", scale=2)
                            compare_btn = gr.Button("Compare", elem_id="rlft-compare", scale=1)
                        compare_box = gr.HTML("")
                with gr.Tab("Progress", id="progress") as progress_tab:
                    summary = gr.Markdown("")
                    with gr.Row():
                        outcome_plot = gr.BarPlot(x="outcome", y="count", title="Judgements per outcome",
                                                  sort=None, height=260)
                        time_plot = gr.LinePlot(x="time", y="judgements", color="rater",
                                                title="Judgements over time (cumulative)", height=260)
                    rater_table = gr.Dataframe(label="Per rater", interactive=False, wrap=True)
                    reward_plot = gr.LinePlot(x="n", y="accuracy", title="Reward versions: held-out pairwise accuracy",
                                              x_title="reward version", y_title="accuracy", y_lim=[0.0, 1.0], height=240)
                    refresh = gr.Button("Refresh", size="sm")

            pair_outputs = [session, pair_box, prompt_box, token, status]

            def on_load(current, saved, request: gr.Request):
                rater = self.rater_for(saved, request)
                if current is not None or rater is None:
                    # Change nothing: the rater already started (their pair stays), or there is no one to
                    # start and the page already shows the name prompt. This queued event may finish after
                    # the rater typed a name and pressed Enter, so it must never reset the page.
                    return tuple(gr.skip() for _ in range(len(pair_outputs) + 2))
                out = self.start(None, rater, request)
                return (*out, gr.update(visible=not (cfg.auth or cfg.rater)), rater)

            def on_start(current, typed, request: gr.Request):
                out = self.start(current, typed, request)
                return (*out, gr.update(visible=False), out[0].rater)

            demo.load(on_load, [session, saved_name], [*pair_outputs, name_row, saved_name], api_name="on_load",
                      api_visibility="private")
            go.click(on_start, [session, name], [*pair_outputs, name_row, saved_name], api_name="start",
                     concurrency_limit=None)
            name.submit(on_start, [session, name], [*pair_outputs, name_row, saved_name], api_name="start_on_enter",
                        api_visibility="private",
                        concurrency_limit=None)
            for side, btn in buttons.items():
                btn.click(_bind(self.vote, side), [session, token, name], pair_outputs, api_name=f"vote_{side}",
                          concurrency_limit=None, show_progress="hidden", trigger_mode="once")
            undo.click(self.undo, [session, name], pair_outputs, api_name="undo", concurrency_limit=None,
                       show_progress="hidden", trigger_mode="once")

            gallery_inputs = [prompt_pick, search, limit]
            gallery_tab.select(self.gallery_choices, None, [prompt_pick, run_a, run_b], api_name="gallery_choices",
                               api_visibility="private").then(
                self.gallery, gallery_inputs, [gallery_box, gallery_note], api_name="gallery_on_tab",
                api_visibility="private")
            prompt_pick.change(self.gallery, gallery_inputs, [gallery_box, gallery_note], api_name="gallery")
            search.submit(self.gallery, gallery_inputs, [gallery_box, gallery_note], api_name="gallery_search",
                          api_visibility="private")
            limit.release(self.gallery, gallery_inputs, [gallery_box, gallery_note], api_name="gallery_limit",
                          api_visibility="private")
            compare_btn.click(self.compare, [run_a, run_b, prompt_pick], compare_box, api_name="compare")
            progress_outputs = [summary, outcome_plot, rater_table, time_plot, reward_plot]
            progress_tab.select(self.progress, None, progress_outputs, api_name="progress_on_tab",
                                api_visibility="private")
            refresh.click(self.progress, None, progress_outputs, api_name="progress")
        return demo


def _bind(fn, side: str):
    """`fn` with the vote side fixed; a named function (not a lambda), so Gradio sees the right signature."""

    def handler(session, token, name, request: gr.Request):
        return fn(side, session, token, name, request)

    handler.__name__ = f"vote_{side}"
    return handler


def _version_number(version: str) -> int:
    digits = "".join(ch for ch in str(version) if ch.isdigit())
    return int(digits) if digits else 0
