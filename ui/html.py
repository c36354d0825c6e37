"""HTML fragments for the pair view, the gallery grid and the compare-runs table.

Images are referenced by content hash through the app's own image route (`ui.security.IMAGE_ROUTE`), so
the browser caches them forever and can preload the prefetched pair. Every text from the database
(prompts, model names) is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Iterable, Sequence

from ui.security import IMAGE_ROUTE

SMALL = 256  # images narrower than this are scaled up with crisp pixels instead of blurred


def image_url(sha256: str) -> str:
    # Relative, so the app also works behind a proxy under a sub-path.
    return f"{IMAGE_ROUTE.lstrip('/')}/{sha256}"


def _img(image, cls: str, alt: str) -> str:
    pix = " rlft-pixelated" if (image.width or 0) < SMALL else ""
    url = image_url(image.sha256)
    return (f'<a class="rlft-full" href="{url}" target="_blank" rel="noopener" title="Open full size">'
            f'<img class="{cls}{pix}" src="{url}" alt="{escape(alt)}" width="{image.width}" height="{image.height}"></a>')


def pair_html(shown, upcoming=None) -> str:
    """The two images side by side (stacked on narrow screens), plus hidden preloads of the next pair."""
    if shown is None:
        return '<div class="rlft-empty">Nothing to rate right now.</div>'
    pair = shown.pair
    left = _img(pair.a, "rlft-img", "left image")
    right = _img(pair.b, "rlft-img", "right image")
    out = [f'<div class="rlft-pair" data-token="{escape(shown.token)}">',
           f'<figure class="rlft-side" id="rlft-left-img">{left}<figcaption>left: 1 or &larr;</figcaption></figure>',
           f'<figure class="rlft-side" id="rlft-right-img">{right}<figcaption>right: 2 or &rarr;</figcaption></figure>',
           "</div>"]
    if upcoming is not None:  # hidden images still load: the next pair is in the browser cache before it is shown
        out.append('<div class="rlft-preload" aria-hidden="true">'
                   f'<img src="{image_url(upcoming.a.sha256)}" alt=""><img src="{image_url(upcoming.b.sha256)}" alt=""></div>')
    return "".join(out)


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
            f'<figure class="rlft-card">{_img(r["image"], "rlft-thumb", r["image"].prompt)}'
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
        return f'<td>{_img(image, "rlft-thumb", image.prompt)}<div>{escape(score_label)} {s}</div></td>'

    body = "".join(
        f'<tr><td class="rlft-muted">{escape(prompt)}<br>seed {seed}</td>{cell(a, sa)}{cell(b, sb)}</tr>'
        for prompt, seed, a, b, sa, sb in rows)
    return (f'<table class="rlft-compare"><thead><tr><th>prompt</th><th>{escape(label_a)}</th>'
            f'<th>{escape(label_b)}</th></tr></thead><tbody>{body}</tbody></table>')
