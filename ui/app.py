"""The Gradio Blocks app: Rate, Gallery and Progress tabs on one preference store.

`RatingApp` holds what the tabs share (the store, the prefetch threads, the scorers, vote timings);
`RatingApp.build()` returns the `gr.Blocks`. Launching (host, auth, routes, key script) is `ui.server`.

Vote handlers take the session (gr.State, server side), the token of the pair on screen (a hidden
textbox the page sends back) and the rater; see `ui.session` for why the token. Each button is also an
API endpoint (`/vote_left`, `/vote_right`, `/vote_tie`, `/vote_both_bad`, `/vote_skip`, `/undo`,
`/start`), which is how `bench/bench_ui.py` drives the server with `gradio_client`. No handler raises for
something a person did (no name yet, nothing left to rate, a stale page): each answers with a page that
says what happened, so nothing reaches the terminal as a traceback.

The typed rater name lives in the browser's localStorage under `NAME_KEY`, in plain text (Gradio's
BrowserState encrypts with a key that changes with every server process, so a restart forgot the name):
`ui/static/keys.js` saves it when the pair view names the rater, and the page-load event reads it back.
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
from ui import compare, gallery, html, progress
from ui.scoring import Scores, reward_versions
from ui.session import MIN_DECISION_MS, RateSession, View

log = logging.getLogger(__name__)

MAX_RATER_NAME = 100
MAX_SHOWN = 2000  # the most gallery images or compare rows one page shows
COMPARE_ROWS = 50  # compare rows shown first (the summary counts them all)
NAME_KEY = "rlft-rater-name"  # localStorage key of the typed rater name (keys.js writes it)
KEYS_HTML = ("<div class='rlft-keys'><kbd>1</kbd>/<kbd>&larr;</kbd> left better · <kbd>2</kbd>/<kbd>&rarr;</kbd> "
             "right better · <kbd>3</kbd>/<kbd>&darr;</kbd> tie · <kbd>4</kbd> both bad · <kbd>space</kbd>/<kbd>s</kbd> "
             "skip · <kbd>backspace</kbd>/<kbd>u</kbd> undo · click an image for full size</div>")
BUTTONS = (  # (side, elem_id, label): short, so the five fit one row on a phone; keys are in KEYS_HTML
    ("left", "rlft-left", "◀ Left better"),
    ("tie", "rlft-tie", "Tie"),
    ("both_bad", "rlft-bad", "Both bad"),
    ("skip", "rlft-skip", "Skip"),
    ("right", "rlft-right", "Right better ▶"),
)
# The page-load event's inputs, read in the browser: the session as it is, the name from localStorage.
LOAD_NAME_JS = f"""(session, typed) => {{ let saved = "";
  try {{ saved = localStorage.getItem({NAME_KEY!r}) || ""; }} catch (e) {{}}
  return [session, saved]; }}"""
FORGET_NAME_JS = f"""() => {{ try {{ localStorage.removeItem({NAME_KEY!r}); }} catch (e) {{}}
  document.documentElement.classList.remove("rlft-named"); return []; }}"""


@dataclasses.dataclass
class AppConfig:
    """How the app behaves (the CLI fills it from flags)."""

    strategy: StrategyMix | None = None  # pair strategy mix for every rater (None: the store's default mix)
    rater: str | None = None  # a fixed rater name for every browser (--rater); else asked once per browser
    auth: bool = False  # raters are the --auth login names
    min_decision_ms: int = MIN_DECISION_MS  # faster votes are treated as double clicks
    gallery_limit: int = 200  # images shown in the gallery by default
    prefetch_threads: int = 4  # background pair selection, shared by all sessions
    reward: str | None = None  # the Gallery's (and `uncertain`'s) reward: a version or built-in spec (None: the newest version)

    def __post_init__(self):
        # Mix text or a dict from a library caller is read once, here; a StrategyMix stays as it is.
        self.strategy = parse_mix(self.strategy) if self.strategy else None


class RatingApp:
    """Shared state of one server; `build()` makes the Gradio app."""

    def __init__(self, store, config: AppConfig | None = None):
        self.store = store
        self.config = config or AppConfig()
        self.scores = Scores(store, reward=self.config.reward)
        self.executor = ThreadPoolExecutor(self.config.prefetch_threads, thread_name_prefix="rlft-prefetch")
        self.timings: collections.deque[float] = collections.deque(maxlen=1_000_000)  # ms, vote -> next pair ready
        self._timing_lock = threading.Lock()
        uses_scorer = needs_scorer(self.config.strategy)
        self._scorer = self.scores.pair_scorer if uses_scorer else (lambda: None)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- sessions ---------------------------------------------------------------------------------------
    def rater_for(self, name: str | None, request: gr.Request | None) -> str | None:
        """The rater a request votes as: the login name with --auth, the --rater name, else the typed name,
        matched to a known rater regardless of case and spacing ("alice " is the existing "Alice")."""
        user = getattr(request, "username", None) if request is not None else None
        if self.config.auth and user:
            return str(user)
        if self.config.rater:
            return self.config.rater
        name = " ".join((name or "").split())[:MAX_RATER_NAME]
        return self.known_rater(name) or name or None

    def known_rater(self, name: str) -> str | None:
        """The first-created rater whose name equals `name` ignoring case, or None."""
        key = name.casefold()
        if not key:
            return None
        try:
            known = self.store.raters()
        except Exception:  # a database hiccup must not block rating under the name as typed
            log.exception("could not list raters")
            return None
        return next((r for r in known if r == name), None) or next((r for r in known if r.casefold() == key), None)

    def typed_names(self) -> bool:
        """Whether raters type their name (no --auth login, no fixed --rater)."""
        return not (self.config.auth or self.config.rater)

    def new_session(self, rater: str) -> RateSession:
        return RateSession(self.store, rater, strategy=self.config.strategy, scorer=self._scorer,
                           executor=self.executor, min_decision_ms=self.config.min_decision_ms)

    def _record_timing(self, ms: float) -> None:
        with self._timing_lock:
            self.timings.append(ms)

    # -- handlers (plain functions of plain values: unit-tested without a browser) ------------------------
    def render(self, session: RateSession, view: View, note: str = ""):
        """(session, pair html, prompt html, token, status html) for a view; `note` replaces its message."""
        token = view.shown.token if view.shown else ""
        remember = session.rater if self.typed_names() else ""  # keys.js keeps a typed name in localStorage
        pair = (html.pair_html(view.shown, view.upcoming, remember=remember) if view.shown is not None
                else html.exhausted_html(remember=remember))
        return (session, pair, html.prompt_html(view.shown), token,
                html.status_html(view, session.rater, note or view.message))

    def need_name(self, message: str, ok: bool = True):
        """The page asking for a name (no session), saying `message`; `ok=False` when an action was refused."""
        return None, html.need_name_html(), "", "", html.status_html(None, "", message, ok=ok)

    def start(self, session, name, request: gr.Request | None = None):
        rater = self.rater_for(name, request)
        if rater is None:
            return self.need_name("Type your name first: every vote is stored under it.")
        welcome = ""
        if session is None or session.rater != rater:
            session = self.new_session(rater)
            typed = " ".join((name or "").split())
            if self.typed_names() and typed and typed != rater:
                welcome = f"Rating as {rater}, the known rater whose name matches “{typed}”."
        return self.render(session, session.start(), welcome)

    def vote(self, side: str, session, token, name, request: gr.Request | None = None):
        t0 = time.perf_counter()
        if session is None:  # no session on this page yet: not started, or older than this server process
            rater = self.rater_for(name, request)
            if rater is None:
                return self.need_name("Type your name first: that vote was not recorded.", ok=False)
            session = self.new_session(rater)
            if token:  # the pair on the page was offered by a session this server no longer has
                return self.render(session, dataclasses.replace(
                    session.start(), ok=False, message="That pair was offered before the server restarted (or "
                    "this page lost its connection): vote not recorded. Here is a new pair."))
        try:
            view = session.vote(str(token or ""), side)
        except UserError as e:  # e.g. an API caller's unknown side: the pair stays, nothing recorded
            return self.render(session, dataclasses.replace(session.start(), message=str(e), ok=False))
        out = self.render(session, view)
        if view.ok:
            self._record_timing((time.perf_counter() - t0) * 1000)
        return out

    def undo(self, session, name, request: gr.Request | None = None):
        if session is None:
            rater = self.rater_for(name, request)
            if rater is None:
                return self.need_name("Nothing to undo: type your name first.", ok=False)
            session = self.new_session(rater)
        return self.render(session, session.undo())

    def poll(self, session):
        """While the page shows "nothing left", offer a pair as soon as new images make one."""
        view = session.poll() if session is not None else None
        if view is None:
            return tuple(gr.skip() for _ in range(5))
        return self.render(session, view)

    def gallery(self, prompt, search, limit):
        images = gallery.usable(self.store.images())
        scores, label = self.scores.rank(images)
        limit = max(1, min(MAX_SHOWN, int(limit or self.config.gallery_limit)))
        rows = gallery.ranked(images, scores, prompt, search or "", limit)
        shown = f"{len(rows)} of {len(images)} images, ranked by **{label}**"
        return html.gallery_html(rows, "reward" if label.startswith("reward") else "BT"), shown

    def gallery_choices(self):
        images = gallery.usable(self.store.images())
        return gr.update(choices=gallery.prompt_choices(images))

    def compare_choices(self, run_a, run_b):
        """The runs and prompts to pick from; the base and the newest tuned run picked first."""
        images = gallery.usable(self.store.images())
        runs = gallery.run_choices(images)
        a, b = gallery.default_runs(runs, images)
        a, b = (run_a if run_a in runs else a), (run_b if run_b in runs else b)
        return (gr.update(choices=runs, value=a), gr.update(choices=runs, value=b),
                gr.update(choices=gallery.prompt_choices(images)))

    def judges(self, images) -> list[tuple[str, dict[str, float]]]:
        """(name, score per sha256) of every judge of a comparison: the latest reward model (when one loads),
        the Bradley-Terry fit of the judgements (judged images only), then each registered judge."""
        out = []
        scores, label = self.scores.rank(images)
        if label.startswith("reward"):
            out.append((label, scores))
            scores = self.store.fit_scores()
        out.append(("Bradley-Terry (judged images)" + (" · the reward is still loading" if "loading" in label else ""),
                    scores))
        for name, fn in compare.registered_judges().items():
            try:
                out.append((name, dict(fn(images))))
            except Exception:  # one judge failing must not hide the others
                log.exception("judge %s failed", name)
        return out

    def compare(self, run_a, run_b, prompt, rows_shown=None):
        """(summary html, rows html) for run B against run A on their shared prompts and seeds."""
        images = gallery.usable(self.store.images())
        pairs = gallery.shared_pairs(images, run_a, run_b, prompt)
        judges = self.judges([im for pair in pairs for im in pair[2:4]]) if pairs else []
        verdicts = [compare.summarize(pairs, name, scores) for name, scores in judges]
        shown = max(1, min(MAX_SHOWN, int(rows_shown or COMPARE_ROWS)))
        name, scores = judges[0] if judges else ("BT", {})
        rows = [(p, seed, a, b, scores.get(a.sha256), scores.get(b.sha256)) for p, seed, a, b in pairs[:shown]]
        label = "reward" if name.startswith("reward") else "BT"
        return (html.compare_summary_html(verdicts, run_a or "", run_b or "", len(pairs), min(shown, len(pairs))),
                html.compare_html(rows, run_a or "", run_b or "", label))

    def progress(self, who=None, session=None):
        """Everything on the Progress tab; the time plot counts `who` (first: this page's rater, if any)."""
        if who is None and session is not None:
            who = session.rater
        p = progress.compute(self.store, reward_versions(), who)
        everyone = f"{progress.EVERYONE} ({int(p.raters['judgements'].sum()) if len(p.raters) else 0})"
        choices = [(everyone, progress.EVERYONE)] + [(f"{r} ({n})", r) for r, n in
                                                     zip(p.raters["rater"], p.raters["judgements"], strict=True)]
        title = ("Judgements over time: everyone" if p.who == progress.EVERYONE
                 else f"Judgements over time: {p.who}")
        return (p.summary, p.outcomes, html.table_html(p.raters),
                gr.LinePlot(value=p.over_time, x_axis_format=p.time_format, x_lim=p.time_lim,
                            x_label_angle=p.time_angle, title=title),
                gr.update(choices=choices, value=p.who), p.rewards)

    # -- layout -----------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        cfg = self.config
        with gr.Blocks(title="rlft: rate images") as demo:
            session = gr.State(None)
            typed = self.typed_names()
            with gr.Tabs():
                with gr.Tab("Rate", id="rate"):
                    with gr.Row(visible=typed, elem_id="rlft-name-row") as name_row:
                        name = gr.Textbox(label="Your name (votes are stored under it)", elem_id="rlft-name",
                                          max_lines=1, max_length=MAX_RATER_NAME, scale=4)
                        go = gr.Button("Start rating", elem_id="rlft-start", variant="primary", scale=1)
                    prompt_box = gr.HTML("", elem_id="rlft-prompt")
                    pair_box = gr.HTML(html.need_name_html() if typed else html.loading_html(), elem_id="rlft-pair")
                    with gr.Row(equal_height=True, elem_id="rlft-buttons"):
                        buttons = {side: gr.Button(label, elem_id=eid, min_width=60,
                                                   variant="primary" if side in ("left", "right") else "secondary")
                                   for side, eid, label in BUTTONS}
                    with gr.Row(elem_id="rlft-status-row"):
                        status = gr.HTML(html.status_html(None, "", ""), elem_id="rlft-status")
                        undo = gr.Button("↶ Undo (u)", elem_id="rlft-undo", size="sm", scale=0, min_width=100)
                        switch = gr.Button("Not you?", elem_id="rlft-switch", size="sm", scale=0, min_width=90,
                                           visible=typed)
                    gr.HTML(KEYS_HTML)
                    token = gr.Textbox("", visible=False, elem_id="rlft-token")
                    # Clicked by keys.js every few seconds while nothing is left to rate: offers new images.
                    poll = gr.Button("check for new images", elem_id="rlft-poll", elem_classes=["rlft-hidden"])
                with gr.Tab("Gallery", id="gallery") as gallery_tab:
                    with gr.Row():
                        prompt_pick = gr.Dropdown([gallery.ALL], value=gallery.ALL, label="Prompt", scale=3,
                                                  allow_custom_value=False)
                        search = gr.Textbox(label="Filter prompts (words)", max_lines=1, scale=2)
                        limit = gr.Slider(10, 1000, value=cfg.gallery_limit, step=10, label="Show", scale=1,
                                          elem_id="rlft-show")
                    gallery_note = gr.Markdown("")
                    gallery_box = gr.HTML("", elem_id="rlft-gallery")
                with gr.Tab("Compare", id="compare") as compare_tab:
                    gr.Markdown("Two models or LoRA runs on the same prompts and seeds, so the only difference is the "
                                "weights: B against A under each judge, then the pairs side by side.")
                    with gr.Row():
                        run_a = gr.Dropdown([], label="A (base)", scale=2, elem_id="rlft-run-a")
                        run_b = gr.Dropdown([], label="B (tuned)", scale=2, elem_id="rlft-run-b")
                        compare_prompt = gr.Dropdown([gallery.ALL], value=gallery.ALL, label="Prompt", scale=2)
                        compare_rows = gr.Number(COMPARE_ROWS, label="Rows shown", precision=0, minimum=1,
                                                 maximum=MAX_SHOWN, scale=1, elem_id="rlft-compare-rows")
                        compare_btn = gr.Button("Compare", elem_id="rlft-compare", scale=1)
                    compare_summary = gr.HTML("", elem_id="rlft-compare-summary")
                    compare_box = gr.HTML("", elem_id="rlft-compare-rows-box")
                with gr.Tab("Progress", id="progress") as progress_tab:
                    summary = gr.Markdown("")
                    with gr.Row():
                        outcome_plot = gr.BarPlot(x="outcome", y="count", title="Judgements per outcome",
                                                  x_title="which side was better",
                                                  sort=list(progress.OUTCOME_BARS.values()), height=260)
                        with gr.Column():
                            time_plot = gr.LinePlot(x="time", y="judgements", title="Judgements over time",
                                                    y_title="judgements (cumulative)", height=260,
                                                    elem_id="rlft-time-plot")
                            who = gr.Dropdown([], value=None, label="Whose judgements", elem_id="rlft-who")
                    gr.Markdown("**Per rater**")
                    rater_table = gr.HTML("", elem_id="rlft-raters")
                    reward_plot = gr.BarPlot(x="version", y="accuracy", title="Reward versions: held-out pairwise accuracy",
                                             x_title="reward version", y_title="accuracy", y_lim=[0.0, 1.0],
                                             height=240, elem_id="rlft-reward-plot")
                    refresh = gr.Button("Refresh", size="sm", elem_id="rlft-refresh")

            pair_outputs = [session, pair_box, prompt_box, token, status]

            def with_name_row(out):
                """`out` plus the name row (shown only while no one rates here) and the name box's value."""
                started = out[0] is not None
                return (*out, gr.update(visible=typed and not started), out[0].rater if started else gr.skip())

            def on_load(current, saved, request: gr.Request):
                rater = self.rater_for(saved, request)
                if current is not None or rater is None:
                    # Change nothing: the rater already started (their pair stays), or there is no one to
                    # start and the page already shows the name prompt. This queued event may finish after
                    # the rater typed a name and pressed Enter, so it must never reset the page.
                    return tuple(gr.skip() for _ in range(len(pair_outputs) + 2))
                return with_name_row(self.start(None, rater, request))

            def on_start(current, typed_name, request: gr.Request):
                return with_name_row(self.start(current, typed_name, request))

            def on_switch():
                return (*self.need_name("Type the name to rate as, and press Enter."), gr.update(visible=True), "")

            name_outputs = [*pair_outputs, name_row, name]
            demo.load(on_load, [session, name], name_outputs, js=LOAD_NAME_JS, api_name="on_load",
                      api_visibility="private")
            go.click(on_start, [session, name], name_outputs, api_name="start", concurrency_limit=None)
            name.submit(on_start, [session, name], name_outputs, api_name="start_on_enter",
                        api_visibility="private", concurrency_limit=None)
            switch.click(on_switch, None, name_outputs, js=FORGET_NAME_JS, api_name="switch_rater",
                         api_visibility="private")
            poll.click(self.poll, [session], pair_outputs, api_name="poll", api_visibility="private",
                       concurrency_limit=None, show_progress="hidden", trigger_mode="once")
            # Votes skip Gradio's queue: one POST answered directly instead of a queue join plus an event stream,
            # which halves the requests per key press and keeps the next pair quick with many raters at once.
            for side, btn in buttons.items():
                btn.click(_bind(self.vote, side), [session, token, name], pair_outputs, api_name=f"vote_{side}",
                          show_progress="hidden", trigger_mode="once", queue=False)
            undo.click(self.undo, [session, name], pair_outputs, api_name="undo", show_progress="hidden",
                       trigger_mode="once", queue=False)

            gallery_inputs = [prompt_pick, search, limit]
            gallery_tab.select(self.gallery_choices, None, prompt_pick, api_name="gallery_choices",
                               api_visibility="private").then(
                self.gallery, gallery_inputs, [gallery_box, gallery_note], api_name="gallery_on_tab",
                api_visibility="private")
            prompt_pick.change(self.gallery, gallery_inputs, [gallery_box, gallery_note], api_name="gallery")
            search.submit(self.gallery, gallery_inputs, [gallery_box, gallery_note], api_name="gallery_search",
                          api_visibility="private")
            # `change`, not `release`: a number typed into the box is a change too (release is the slider's alone).
            limit.change(self.gallery, gallery_inputs, [gallery_box, gallery_note], api_name="gallery_limit",
                         api_visibility="private", trigger_mode="always_last")
            compare_inputs = [run_a, run_b, compare_prompt, compare_rows]
            compare_outputs = [compare_summary, compare_box]
            compare_tab.select(self.compare_choices, [run_a, run_b], [run_a, run_b, compare_prompt],
                               api_name="compare_choices", api_visibility="private").then(
                self.compare, compare_inputs, compare_outputs, api_name="compare_on_tab", api_visibility="private")
            compare_btn.click(self.compare, compare_inputs, compare_outputs, api_name="compare")
            compare_rows.submit(self.compare, compare_inputs, compare_outputs, api_name="compare_rows",
                                api_visibility="private")
            progress_outputs = [summary, outcome_plot, rater_table, time_plot, who, reward_plot]
            progress_tab.select(self.progress, [who, session], progress_outputs, api_name="progress_on_tab",
                                api_visibility="private")
            refresh.click(self.progress, [who, session], progress_outputs, api_name="progress")
            who.input(self.progress, [who, session], progress_outputs, api_name="progress_for",
                      api_visibility="private")
        return demo


def _bind(fn, side: str):
    """`fn` with the vote side fixed; a named function (not a lambda), so Gradio sees the right signature."""

    def handler(session, token, name, request: gr.Request):
        return fn(side, session, token, name, request)

    handler.__name__ = f"vote_{side}"
    return handler
