"""ui: the rating app (Gradio). Rate pairs with the keyboard, browse the ranked gallery, watch progress.

    from ui.server import serve, ServeOptions
    demo, url, app = serve(prefs.open_store(), ServeOptions(port=0), block=False)

Modules: `session` (one rater's pair stream: prefetch, votes, undo; no Gradio), `app` (the Blocks
layout and handlers), `server` (launch, auth, key script), `security` (pool-image route, auth gate),
`gallery`, `progress`, `scoring` (reward model or Bradley-Terry), `html` (fragments). Depends on `prefs`;
imports `reward` lazily and only when a reward version exists.
"""
