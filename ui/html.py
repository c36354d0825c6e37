"""HTML fragments for the pair view, the rating status, the gallery grid and the compare-runs table.

Images are referenced by content hash through the app's own image route (`ui.security.IMAGE_ROUTE`), so
the browser caches them forever and can preload the prefetched pair. Every text from the database
(prompts, model names, rater names) is escaped.

The pair view tells `ui/static/keys.js` what the page is in: `.rlft-pair[data-token]` (a pair to vote on),
`[data-state=need-name]` (no rater yet), `[data-state=exhausted]` (every pair judged: the page polls for new
images); `data-rater` carries a typed rater name for the browser to remember.
"""

from __future__ import annotations

from html import escape
from typing import Iterable, Sequence

from ui.security import IMAGE_ROUTE

SMALL = 256  # images narrower than this are scaled up with crisp pixels instead of blurred


def image_url(sha256: str) -> str:
    # Relative, so the app also works behind a proxy under a sub-path.
    return f"{IMAGE_ROUTE.lstrip('/')}/{sha256}"


GENERATE_HINT = ("<code>rlft generate --prompts FILE -n 4</code> (or <code>rlft import FOLDER</code>) "
                 "in another terminal")


def _img(image, cls: str, alt: str, lazy: bool = False) -> str:
    pix = " rlft-pixelated" if (image.width or 0) < SMALL else ""
    url = image_url(image.sha256)
    # Lazy only where many images share a page (gallery, compare): the pair must paint at once.
    load = ' loading="lazy" decoding="async"' if lazy else ""
    return (f'<a class="rlft-full" href="{url}" target="_blank" rel="noopener" title="Open full size">'
            f'<img class="{cls}{pix}" src="{url}" alt="{escape(alt)}" width="{image.width}" height="{image.height}"'
            f'{load}></a>')


def _remember(rater: str) -> str:
    return f' data-rater="{escape(rater)}"' if rater else ""


def pair_html(shown, upcoming=None, remember: str = "") -> str:
    """The two images side by side (smaller on a phone, still side by side, so left is left), plus hidden
    preloads of the next pair. `remember`: a typed rater name for the browser to keep."""
    if shown is None:
        return exhausted_html(remember)
    pair = shown.pair
    left = _img(pair.a, "rlft-img", "left image")
    right = _img(pair.b, "rlft-img", "right image")
    full = '<a class="rlft-full rlft-touch" href="{}" target="_blank" rel="noopener">full size</a>'
    out = [f'<div class="rlft-pair" data-token="{escape(shown.token)}"{_remember(remember)}>',
           f'<figure class="rlft-side" id="rlft-left-img">{left}<figcaption><span class="rlft-keyhint">left: 1 or '
           f'&larr;</span><span class="rlft-touch">tap: left better · </span>{full.format(image_url(pair.a.sha256))}'
           '</figcaption></figure>',
           f'<figure class="rlft-side" id="rlft-right-img">{right}<figcaption><span class="rlft-keyhint">right: 2 or '
           f'&rarr;</span><span class="rlft-touch">tap: right better · </span>{full.format(image_url(pair.b.sha256))}'
           '</figcaption></figure>',
           "</div>"]
    if upcoming is not None:  # hidden images still load: the next pair is in the browser cache before it is shown
        out.append('<div class="rlft-preload" aria-hidden="true">'
                   f'<img src="{image_url(upcoming.a.sha256)}" alt=""><img src="{image_url(upcoming.b.sha256)}" alt=""></div>')
    return "".join(out)


def need_name_html() -> str:
    """The pair view before anyone rates on this page."""
    return ('<div class="rlft-empty" data-state="need-name">Type your name in the box above and press Enter: '
            'every vote is stored under it.</div>')


def loading_html() -> str:
    return '<div class="rlft-empty" data-state="loading">Loading a pair&hellip;</div>'


def exhausted_html(remember: str = "") -> str:
    """The pair view when this rater has judged every pair of the pool."""
    return (f'<div class="rlft-empty" data-state="exhausted"{_remember(remember)}><b>The pool is exhausted: you have '
            f'judged every pair.</b><br>Add images with {GENERATE_HINT}; new pairs appear here as soon as they '
            'arrive.</div>')


def status_html(view, rater: str, message: str = "", ok: bool | None = None) -> str:
    """The line under the buttons: what the last action did (a brief confirmation, or a warning), then who
    rates, the votes of this session, judgements in all and the pairs left.

    `view`: the session's View (None before anyone rates); `ok` overrides `view.ok` (for messages without a
    view)."""
    ok = view.ok if ok is None and view is not None else (True if ok is None else ok)
    first = ""
    if view is not None and view.saved and ok:
        first = f'<span class="rlft-saved">&#10003; {escape(view.saved)}, saved</span>'
    if message:
        text = f'<span class="rlft-{"note" if ok else "warn"}">{"" if ok else "&#9888; "}{escape(message)}</span>'
        first = f"{first} · {text}" if first else text
    parts = []
    if view is not None:
        parts.append(f"rating as <b>{escape(rater)}</b>")
        parts.append(f"<b>{view.count}</b> vote{'s' if view.count != 1 else ''} this session")
        t = view.tally
        if t is not None:
            parts.append(f"{t.judged:,} in all")
            if view.shown is not None:
                left = (f"{t.left_same_prompt:,} same-prompt pair{'s' if t.left_same_prompt != 1 else ''} left"
                        if t.left_same_prompt else f"{t.left_all:,} pair{'s' if t.left_all != 1 else ''} left")
                parts.append(left)
    lines = [x for x in (first, " · ".join(parts)) if x]
    return f'<div class="rlft-status">{"<br>".join(lines)}</div>'


def prompt_html(shown) -> str:
    if shown is None:
        return ""
    prompt = shown.pair.a.prompt
    other = shown.pair.b.prompt
    if other != prompt:
        return (f'<div class="rlft-prompt"><span>left: {escape(prompt) or "<i>no prompt</i>"}</span>'
                f'<span>right: {escape(other) or "<i>no prompt</i>"}</span></div>')
    return f'<div class="rlft-prompt">{escape(prompt) or "<i>no prompt</i>"}</div>'


def gallery_html(rows: Sequence[dict], score_label: str) -> str:
    """A grid of cards: rank, image, score, judgement count, prompt."""
    if not rows:
        return '<div class="rlft-empty">No images match.</div>'
    cards = []
    for r in rows:
        score = "&ndash;" if r["score"] is None else f"{r['score']:+.3f}"
        cards.append(
            f'<figure class="rlft-card">{_img(r["image"], "rlft-thumb", r["image"].prompt, lazy=True)}'
            f'<figcaption><b>#{r["rank"]}</b> {escape(score_label)} {score} &middot; {r["n_judgements"]} judged'
            f'<br><span class="rlft-muted">{escape(r["image"].prompt)}</span></figcaption></figure>')
    return f'<div class="rlft-grid">{"".join(cards)}</div>'


def compare_html(rows: Iterable[tuple], label_a: str, label_b: str, score_label: str) -> str:
    """Rows of (prompt, seed, image_a, image_b, score_a, score_b): the same prompt and seed from two runs."""
    rows = list(rows)
    if not rows:
        return ('<div class="rlft-empty">No images share a prompt and seed between these two runs. Generate the '
                'same prompts with the same seed for both (e.g. <code>rlft generate --seed 0 --lora ...</code>).</div>')

    def cell(image, score):
        s = "&ndash;" if score is None else f"{score:+.3f}"
        return f'<td>{_img(image, "rlft-thumb", image.prompt, lazy=True)}<div>{escape(score_label)} {s}</div></td>'

    def diff(sa, sb):
        return "&ndash;" if sa is None or sb is None else f"{sb - sa:+.3f}"

    body = "".join(
        f'<tr><td class="rlft-muted">{escape(prompt)}<br>seed {seed}</td>{cell(a, sa)}{cell(b, sb)}'
        f'<td class="rlft-num">{diff(sa, sb)}</td></tr>'
        for prompt, seed, a, b, sa, sb in rows)
    return (f'<table class="rlft-compare"><thead><tr><th>prompt</th><th>A: {escape(label_a)}</th>'
            f'<th>B: {escape(label_b)}</th><th>B &minus; A</th></tr></thead><tbody>{body}</tbody></table>')


def compare_summary_html(verdicts, label_a: str, label_b: str, n_pairs: int, shown: int) -> str:
    """Wins / ties / losses of B against A and the mean score difference under each judge, over all `n_pairs`
    shared pairs, and whether the table below shows them all."""
    if not n_pairs:
        return ""
    head = (f'<p><b>B</b> ({escape(label_b)}) against <b>A</b> ({escape(label_a)}) on <b>{n_pairs}</b> prompt + seed '
            f'pair{"s" if n_pairs != 1 else ""} both have. A judge counts a tie when the scores differ by less than '
            f'{TIE_NOTE}.</p>')
    rows = []
    for v in verdicts:
        mean = "&ndash;" if v.mean_diff is None else f"{v.mean_diff:+.3f}"
        share = f"{v.wins / v.scored:.0%}" if v.scored else "&ndash;"
        rows.append(f'<tr><td>{escape(v.judge)}</td><td class="rlft-num">{v.wins}</td><td class="rlft-num">{v.ties}</td>'
                    f'<td class="rlft-num">{v.losses}</td><td class="rlft-num">{share}</td>'
                    f'<td class="rlft-num">{mean}</td><td class="rlft-num">{v.unscored}</td></tr>')
    table = ('<div class="rlft-scroll"><table class="rlft-table"><thead><tr><th>judge</th><th>B wins</th><th>ties</th>'
             '<th>B loses</th><th>B win rate</th><th>mean B &minus; A</th><th>not scored</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table></div>')
    cut = ""
    if shown < n_pairs:
        cut = (f'<p class="rlft-warn-soft">Showing the first {shown} of {n_pairs} pairs below (the counts above cover '
               'all of them); raise "Rows shown" to see more.</p>')
    return f'<div class="rlft-summary">{head}{table}{cut}</div>'


TIE_NOTE = "0.05 (a 49-51% chance either way)"


def table_html(df) -> str:
    """A plain table of a DataFrame: headers never break inside a word; wide tables scroll sideways."""
    if df is None or not len(df):
        return '<div class="rlft-empty">No judgements yet.</div>'
    head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)

    def cell(v):
        if v is None or (isinstance(v, float) and v != v):
            return "<td>&ndash;</td>"
        cls = ' class="rlft-num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
        return f"<td{cls}>{escape(str(v))}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f'<div class="rlft-scroll"><table class="rlft-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
