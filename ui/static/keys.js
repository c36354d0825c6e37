// rlft rating shortcuts: a key clicks the Rate tab's button of the same meaning (found by elem_id).
// Injected into <head> by ui.server; Gradio has no key bindings of its own.
(() => {
  const KEYS = {
    ArrowLeft: "rlft-left", "1": "rlft-left",
    ArrowRight: "rlft-right", "2": "rlft-right",
    ArrowDown: "rlft-tie", "3": "rlft-tie",
    "4": "rlft-bad",
    " ": "rlft-skip", s: "rlft-skip", S: "rlft-skip",
    Backspace: "rlft-undo", u: "rlft-undo", U: "rlft-undo",
  };
  const typing = (el) => el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));
  const button = (id) => {
    const host = document.getElementById(id);
    if (!host) return null;
    return host.tagName === "BUTTON" ? host : host.querySelector("button");
  };
  let box = null; // the full-size view
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
  document.addEventListener("keydown", (e) => {
    if (box && (e.key === "Escape" || e.key === "Enter")) { e.preventDefault(); closeBox(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    const id = KEYS[e.key];
    if (!id) return;
    e.preventDefault(); // no page scroll on space/arrows, no native click of a focused button
    if (e.repeat) return; // a held key is not a stream of votes
    const btn = button(id);
    if (!btn || btn.offsetParent === null || btn.disabled) return; // Rate tab not on screen
    closeBox();
    btn.click();
  }, true);
  document.addEventListener("keyup", (e) => {
    // A focused button would otherwise fire its own click on space/enter keyup: a second vote.
    if ((e.key === " " || e.key === "Enter") && e.target && e.target.tagName === "BUTTON" &&
        Object.values(KEYS).includes(e.target.id || (e.target.closest("[id]") || {}).id)) e.preventDefault();
  }, true);
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a.rlft-full");
    if (a && e.button === 0 && !e.ctrlKey && !e.metaKey && !e.shiftKey) { e.preventDefault(); openBox(a.href); return; }
    const b = e.target.closest && e.target.closest("button");
    if (b && Object.values(KEYS).includes(b.id)) setTimeout(() => b.blur(), 0); // keys act on the page, not the button
  }, true);
})();
