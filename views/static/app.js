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
      if (fresh) document.getElementById("main").replaceChildren(...fresh.childNodes);
    } catch (e) {
      // The server restarting is not the page's problem; the next tick retries.
    }
  }
  setInterval(refresh, every);
})();
