"""ui: the rating app (Gradio). Rate pairs with the keyboard, browse the ranked gallery, watch progress.

    from ui.server import serve, ServeOptions
    demo, url, app = serve(prefs.open_store(), ServeOptions(port=0), block=False)

Modules: `session` (one rater's pair stream: prefetch, votes, undo; no Gradio), `tally` (a rater's
judgements and pairs left), `app` (the Blocks layout and handlers: Rate, Gallery, Compare, Progress),
`server` (launch, auth, key script, prompt stop), `security` (pool-image route, auth gate), `gallery`,
`compare` (base vs tuned under each judge; `register_judge` adds one), `progress`, `scoring` (reward model
or Bradley-Terry, loaded in the background), `html` (fragments), `static/keys.js` (keys, taps, the
remembered rater, words for a vote the server never got). Depends on `prefs`; imports `reward` lazily and
only when a reward version exists.
"""
