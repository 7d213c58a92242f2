// Pages that show live state (the dashboard) refresh their main part in place.
"use strict";
(function () {
  const marker = document.querySelector("[data-refresh]");
  if (!marker) return;
  const every = Number(marker.dataset.refresh) * 1000;
  async function refresh() {
    if (document.hidden) return;
    try {
      const res = await fetch(location.href, { headers: { Accept: "text/html" } });
      if (!res.ok) return;
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      const fresh = doc.getElementById("main");
      if (!fresh) return;
      const main = document.getElementById("main");
      const focused = focusKey(main);
      main.replaceChildren(...fresh.childNodes);
      // A keyboard user keeps their place: the same link or field has the focus again.
      const again = focused && main.querySelector(focused);
      if (again) again.focus({ preventScroll: true });
    } catch (e) {
      // The server restarting is not the page's problem; the next tick retries.
    }
  }
  function focusKey(main) {
    const el = document.activeElement;
    if (!el || el === main || !main.contains(el)) return null;
    const tag = el.tagName.toLowerCase();
    if (el.id) return "#" + CSS.escape(el.id);
    if (el.getAttribute("href")) return tag + '[href="' + CSS.escape(el.getAttribute("href")) + '"]';
    if (el.name) return tag + '[name="' + CSS.escape(el.name) + '"]';
    return null;
  }
  setInterval(refresh, every);
})();
