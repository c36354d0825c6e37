// rlft rating page: keys, taps, the remembered rater name, and plain words when a vote cannot be recorded.
// Injected into <head> by ui.server (it runs before Gradio builds the page); Gradio has no key bindings.
//
// The server's pair view says what the page is in (see ui/html.py): `.rlft-pair[data-token]` (a pair to vote
// on), `[data-state=need-name]`, `[data-state=exhausted]`; `data-rater` is a typed name to keep.
(() => {
  const NAME_KEY = "rlft-rater-name"; // localStorage: the typed rater name, in plain text (survives restarts)
  const UNSENT_KEY = "rlft-unsent"; // sessionStorage: a vote the server never got, told after the reload
  const POLL_MS = 4000; // while the pool is exhausted, ask this often for new images
  const KEYS = {
    ArrowLeft: "rlft-left", "1": "rlft-left",
    ArrowRight: "rlft-right", "2": "rlft-right",
    ArrowDown: "rlft-tie", "3": "rlft-tie",
    "4": "rlft-bad",
    " ": "rlft-skip", s: "rlft-skip", S: "rlft-skip",
    Backspace: "rlft-undo", u: "rlft-undo", U: "rlft-undo",
  };
  const VOTES = { "rlft-left": "left better", "rlft-right": "right better", "rlft-tie": "tie",
                  "rlft-bad": "both bad", "rlft-skip": "skip" };
  const store = (area, key, value) => { // storage may be off (private mode, policy): never break rating
    try {
      if (value === undefined) return window[area].getItem(key);
      if (value === null) window[area].removeItem(key); else window[area].setItem(key, value);
    } catch (e) { /* no storage: the name is asked again */ }
    return null;
  };
  if (store("localStorage", NAME_KEY)) document.documentElement.classList.add("rlft-named"); // no name box flash

  const typing = (el) => el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));
  const button = (id) => {
    const host = document.getElementById(id);
    if (!host) return null;
    return host.tagName === "BUTTON" ? host : host.querySelector("button");
  };
  const pairView = () => document.querySelector("#rlft-pair .rlft-pair, #rlft-pair .rlft-empty");
  const nameBox = () => document.querySelector("#rlft-name textarea, #rlft-name input");
  const narrow = () => window.matchMedia("(max-width: 700px)").matches;

  // -- a short notice at the bottom of the window (role=alert: read out by screen readers) -----------------
  let notice = null, noticeTimer = null;
  const say = (text, ms = 6000, alarm = false) => {
    if (!notice) {
      notice = document.createElement("div");
      notice.id = "rlft-notice";
      notice.setAttribute("role", "alert");
      notice.addEventListener("click", () => { notice.hidden = true; });
      document.body.appendChild(notice);
    }
    notice.textContent = text;
    notice.className = alarm ? "rlft-alarm" : "";
    notice.hidden = false;
    clearTimeout(noticeTimer);
    if (ms) noticeTimer = setTimeout(() => { notice.hidden = true; }, ms);
  };

  // -- the server's reachability, seen from this page's own requests --------------------------------------
  let down = false; // the last request to the server failed to connect
  let pending = null; // {label, at}: a vote click whose request has not been answered yet
  const notRecorded = (label) => {
    store("sessionStorage", UNSENT_KEY, label);
    say(`Not recorded: your vote (${label}) did not reach the server, which is not answering. ` +
        "Keep this page open: it reloads by itself when the server is back; then vote again.", 0, true);
  };
  const realFetch = window.fetch.bind(window);
  window.fetch = (...args) => realFetch(...args).then((r) => {
    if (down) { down = false; if (notice) notice.hidden = true; }
    return r;
  }, (err) => {
    const url = String((args[0] && args[0].url) || args[0] || "");
    down = true;
    // A vote is one POST (/run/vote_..., or a queue join for other events): refused at connect, it never arrived.
    if (pending && (url.includes("/run/") || url.includes("queue/join")) && Date.now() - pending.at < 10000) {
      notRecorded(pending.label);
      pending = null;
    }
    throw err;
  });

  // -- what the pair view says: buttons on or off, the name kept, polling for new images ------------------
  let lastView = "", pollTimer = null;
  const onView = () => {
    const view = pairView();
    const live = !!(view && view.dataset.token);
    for (const id of Object.keys(VOTES)) { // every time: the buttons may be drawn after the pair view
      const b = button(id);
      if (b && b.disabled === live) b.disabled = !live;
    }
    // Gradio patches the HTML in place (the same element may turn from a message into a pair): compare content.
    const sig = view ? [view.className, view.dataset.state, view.dataset.token, view.dataset.rater].join("|") : "";
    if (sig === lastView) return;
    lastView = sig;
    pending = null;
    if (!view) return;
    if (view.dataset.rater) {
      store("localStorage", NAME_KEY, view.dataset.rater);
      document.documentElement.classList.add("rlft-named");
    }
    const state = view.dataset.state;
    if (state === "need-name") {
      document.documentElement.classList.remove("rlft-named");
      setTimeout(() => { const n = nameBox(); if (n && n.offsetParent !== null && !typing(document.activeElement)) n.focus(); }, 0);
    }
    clearInterval(pollTimer);
    pollTimer = null;
    if (state === "exhausted") {
      pollTimer = setInterval(() => { const b = button("rlft-poll"); if (b && !down) b.click(); }, POLL_MS);
    }
    if (live) {
      const unsent = store("sessionStorage", UNSENT_KEY);
      if (unsent) {
        store("sessionStorage", UNSENT_KEY, null);
        say(`While the server was down your vote (${unsent}) was not recorded. This is a new pair.`, 8000, true);
      }
    }
  };
  new MutationObserver(onView).observe(document.documentElement, { childList: true, subtree: true });
  onView(); // the page may already be built when this script runs

  // -- the full-size view ---------------------------------------------------------------------------------
  let box = null;
  const closeBox = () => { if (box) { box.remove(); box = null; } };
  const openBox = (url) => {
    closeBox();
    box = document.createElement("div");
    box.id = "rlft-lightbox";
    box.title = "click or Esc to close";
    const img = document.createElement("img");
    img.src = url;
    img.alt = "full size";
    img.onload = () => { if (img.naturalWidth < 256) img.classList.add("rlft-pixelated"); };
    box.appendChild(img);
    box.addEventListener("click", closeBox);
    document.body.appendChild(box);
  };

  // -- votes ----------------------------------------------------------------------------------------------
  const vote = (id) => {
    const btn = button(id);
    if (!btn || btn.offsetParent === null) return; // Rate tab not on screen
    const view = pairView();
    const state = view && view.dataset.state;
    if (id in VOTES && !(view && view.dataset.token)) {
      if (state === "need-name") {
        say("Type your name first (the box above), then press Enter: nothing was recorded.");
        const n = nameBox();
        if (n) n.focus();
      } else if (state === "exhausted") {
        say("Nothing to vote on: the pool is exhausted. New images appear here as soon as they arrive.");
      }
      return;
    }
    if (down && id in VOTES) { notRecorded(VOTES[id]); return; }
    if (btn.disabled) return;
    closeBox();
    btn.click();
  };
  document.addEventListener("keydown", (e) => {
    if (box && (e.key === "Escape" || e.key === "Enter")) { e.preventDefault(); closeBox(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    const id = KEYS[e.key];
    if (!id) return;
    e.preventDefault(); // no page scroll on space/arrows, no native click of a focused button
    if (e.repeat) return; // a held key is not a stream of votes
    vote(id);
  }, true);
  document.addEventListener("keyup", (e) => {
    // A focused button would otherwise fire its own click on space/enter keyup: a second vote.
    if ((e.key === " " || e.key === "Enter") && e.target && e.target.tagName === "BUTTON" &&
        Object.values(KEYS).includes(e.target.id || (e.target.closest("[id]") || {}).id)) e.preventDefault();
  }, true);
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a.rlft-full");
    if (a && e.button === 0 && !e.ctrlKey && !e.metaKey && !e.shiftKey) {
      e.preventDefault();
      const side = a.querySelector("img") && a.closest("#rlft-left-img, #rlft-right-img");
      if (side && narrow()) { vote(side.id === "rlft-left-img" ? "rlft-left" : "rlft-right"); return; } // tap votes
      openBox(a.href);
      return;
    }
    const b = e.target.closest && e.target.closest("button");
    if (!b) return;
    const id = b.id || (b.closest("[id]") || {}).id;
    if (id in VOTES) {
      if (down) { e.preventDefault(); e.stopPropagation(); notRecorded(VOTES[id]); return; }
      pending = { label: VOTES[id], at: Date.now() };
    }
    if (Object.values(KEYS).includes(id)) setTimeout(() => b.blur(), 0); // keys act on the page, not the button
  }, true);
})();
