// The build page: the last part of the log, then its live tail over Server-Sent Events.
// Every byte of the log becomes text nodes (never HTML), so a log cannot inject markup;
// ANSI colour codes become classes.
"use strict";
(function () {
  const pre = document.getElementById("log");
  if (!pre) return;
  const id = pre.dataset.build;
  const tail = Number(pre.dataset.tail);
  const finalStates = (pre.dataset.finalStates || "").split(" ");
  const note = document.getElementById("log-note");
  const follow = document.getElementById("follow");
  const MAX_LINES = 20000; // the DOM keeps this many lines; the raw log has them all
  let lines = 0;
  let style = {};
  let atBottom = true;

  const scroller = pre;
  scroller.addEventListener("scroll", () => {
    atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  });

  function sgr(params) {
    const codes = params === "" ? [0] : params.split(";").map(Number);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) style = {};
      else if (c === 1) style.bold = true;
      else if (c === 2) style.dim = true;
      else if (c === 3) style.italic = true;
      else if (c === 4) style.underline = true;
      else if (c === 22) { delete style.bold; delete style.dim; }
      else if (c === 23) delete style.italic;
      else if (c === 24) delete style.underline;
      else if (c >= 30 && c <= 37) { style.fg = c - 30; delete style.fgRgb; }
      else if (c >= 90 && c <= 97) { style.fg = c - 90 + 8; delete style.fgRgb; }
      else if (c === 39) { delete style.fg; delete style.fgRgb; }
      else if (c >= 40 && c <= 47) { style.bg = c - 40; delete style.bgRgb; }
      else if (c >= 100 && c <= 107) { style.bg = c - 100; delete style.bgRgb; }
      else if (c === 49) { delete style.bg; delete style.bgRgb; }
      else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
        const n = codes[i + 2];
        const key = c === 38 ? "fg" : "bg";
        if (n < 16) { style[key] = key === "bg" ? n % 8 : n; delete style[key + "Rgb"]; }
        else style[key + "Rgb"] = xterm(n);
        i += 2;
      } else if ((c === 38 || c === 48) && codes[i + 1] === 2) {
        const rgb = codes.slice(i + 2, i + 5).map((v) => Math.max(0, Math.min(255, v | 0)));
        style[(c === 38 ? "fg" : "bg") + "Rgb"] = "rgb(" + rgb.join(",") + ")";
        i += 4;
      }
    }
  }

  function xterm(n) {
    if (n >= 232) { const v = 8 + (n - 232) * 10; return "rgb(" + v + "," + v + "," + v + ")"; }
    n -= 16;
    const step = (v) => (v ? 55 + v * 40 : 0);
    return "rgb(" + step(Math.floor(n / 36)) + "," + step(Math.floor(n / 6) % 6) + "," + step(n % 6) + ")";
  }

  function span(text) {
    const keys = Object.keys(style);
    if (!keys.length) return document.createTextNode(text);
    const el = document.createElement("span");
    const cls = [];
    if (style.bold) cls.push("ansi-bold");
    if (style.dim) cls.push("ansi-dim");
    if (style.italic) cls.push("ansi-italic");
    if (style.underline) cls.push("ansi-underline");
    if (style.fg !== undefined && !style.fgRgb) cls.push("fg-" + style.fg);
    if (style.bg !== undefined && !style.bgRgb) cls.push("bg-" + style.bg);
    el.className = cls.join(" ");
    if (style.fgRgb) el.style.color = style.fgRgb;
    if (style.bgRgb) el.style.background = style.bgRgb;
    el.textContent = text;
    return el;
  }

  // eslint-disable-next-line no-control-regex
  const ESC = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Z0-9]|\x1b./g;

  function render(line, frag) {
    // A carriage return redraws the line (progress bars): keep what was drawn last.
    const cr = line.lastIndexOf("\r", line.length - 1);
    if (cr >= 0) line = line.slice(cr + 1);
    const holder = line.startsWith("[lightci ") ? document.createElement("span") : null;
    const target = holder || frag;
    if (holder) holder.className = "note";
    let last = 0;
    let m;
    ESC.lastIndex = 0;
    while ((m = ESC.exec(line))) {
      if (m.index > last) target.appendChild(span(line.slice(last, m.index)));
      if (m[2] === "m") sgr(m[1]);
      last = ESC.lastIndex;
    }
    if (last < line.length) target.appendChild(span(line.slice(last)));
    if (holder) frag.appendChild(holder);
    frag.appendChild(document.createTextNode("\n"));
  }

  let partial = "";
  function append(text) {
    text = partial + text;
    const parts = text.split("\n");
    partial = parts.pop();
    if (!parts.length) return;
    const frag = document.createDocumentFragment();
    for (const line of parts) render(line, frag);
    pre.appendChild(frag);
    lines += parts.length;
    trim();
    if (follow.checked && atBottom) scroller.scrollTop = scroller.scrollHeight;
  }

  function trim() {
    if (lines <= MAX_LINES) return;
    // Drop the oldest nodes until about MAX_LINES remain; the raw log keeps them all.
    let drop = lines - MAX_LINES;
    while (drop > 0 && pre.firstChild) {
      const node = pre.firstChild;
      const n = (node.textContent.match(/\n/g) || []).length;
      pre.removeChild(node);
      drop -= n;
      lines -= n;
    }
    setNote("older lines trimmed from the page; the raw log has them all");
  }

  function setNote(text) { note.textContent = text; }

  function mb(bytes) { return (bytes / 1048576).toFixed(1) + " MB"; }

  function field(name, value) {
    const el = document.querySelector('[data-field="' + name + '"]');
    if (el) el.textContent = value === null || value === undefined || value === "" ? "—" : value;
  }

  function showState(b) {
    const badge = document.getElementById("state");
    badge.textContent = b.status;
    badge.className = "badge big " + b.status;
    const final = finalStates.includes(b.status);
    const cancel = document.getElementById("cancel-form");
    const retry = document.getElementById("retry-form");
    if (cancel) cancel.hidden = final;
    if (retry) retry.hidden = !final;
    const error = document.getElementById("error");
    error.textContent = b.error || "";
    error.hidden = !b.error;
    field("started_at", b.started_at && b.started_at.replace("T", " ").replace(/\.\d+Z$/, " UTC"));
    field("finished_at", b.finished_at && b.finished_at.replace("T", " ").replace(/\.\d+Z$/, " UTC"));
    field("duration", b.duration === null ? "" : b.duration.toFixed(1) + " s");
    running = !final && b.started_at ? Date.parse(b.started_at) : null;
    field("worker", b.worker);
    field("exit_code", b.exit_code);
    field("commit", b.commit);
    if (final) showOutlook(b);
    const list = document.getElementById("stages");
    if (b.stages && b.stages.length) {
      list.replaceChildren();
      for (const s of b.stages) {
        const li = document.createElement("li");
        li.className = s.exit_code === 0 ? "ok" : s.exit_code === null ? (final ? "bad" : "live") : "bad";
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = s.name;
        const time = document.createElement("span");
        time.className = "time";
        time.textContent = s.finished_at ? s.duration.toFixed(1) + " s" : "running";
        li.append(name, time);
        if (s.exit_code !== null && s.exit_code !== 0) {
          const code = document.createElement("span");
          code.className = "code";
          code.textContent = "exit " + s.exit_code;
          li.append(code);
        }
        list.append(li);
      }
    }
    document.title = b.job + " #" + b.number + " " + b.status + " · lightci";
  }

  // While it runs, the duration ticks on the page without asking the server.
  let running = null;
  setInterval(() => {
    if (running !== null) field("duration", ((Date.now() - running) / 1000).toFixed(0) + " s");
  }, 1000);

  async function start() {
    let offset = 0;
    try {
      const res = await fetch("/api/builds/" + id + "/log?offset=-" + tail, { cache: "no-store" });
      const size = Number(res.headers.get("X-Log-Size") || 0);
      const from = Number(res.headers.get("X-Log-Start") || 0);
      let text = await res.text();
      offset = size;
      if (from > 0) {
        text = text.slice(text.indexOf("\n") + 1); // the first line is cut: start at the next
        const cut = document.createElement("span");
        cut.className = "trimmed";
        cut.textContent = "… showing the last " + mb(size - from) + " of " + mb(size) + " (raw log has it all)";
        pre.appendChild(cut);
        setNote("log is " + mb(size));
      }
      append(text);
    } catch (e) {
      setNote("could not load the log: " + e);
    }
    listen(offset);
  }

  // The queue moves without a state change of this build: while it is open, its place,
  // reason and ETAs are asked for every few seconds (the state events carry none of them).
  function showOutlook(b) {
    const open = !finalStates.includes(b.status);
    const queued = b.status === "queued";
    const at = (iso) => (iso ? "~" + iso.slice(11, 19) + " UTC" : "");
    outlook("position", queued && b.position ? b.position + " in the queue" : "");
    outlook("waiting_for", queued ? b.waiting_for : "");
    outlook("eta_start", queued ? at(b.eta_start) : "");
    outlook("eta_finish", open ? at(b.eta_finish) : "");
  }

  function outlook(name, text) {
    const dd = document.querySelector('[data-outlook="' + name + '"]');
    if (!dd) return;
    dd.textContent = text || "";
    dd.hidden = !text;
    dd.previousElementSibling.hidden = !text;
  }

  async function followOutlook() {
    try {
      const res = await fetch("/api/builds/" + id, { cache: "no-store" });
      if (res.ok) {
        const b = await res.json();
        showOutlook(b);
        if (finalStates.includes(b.status)) return;
      }
    } catch (e) {
      // the server is restarting: ask again later
    }
    setTimeout(followOutlook, 3000);
  }

  function listen(offset) {
    const events = new EventSource("/api/builds/" + id + "/events?offset=" + offset);
    let ended = false;
    events.addEventListener("log", (e) => {
      const data = JSON.parse(e.data);
      offset = data.offset;
      append(data.text);
    });
    events.addEventListener("state", (e) => showState(JSON.parse(e.data)));
    events.addEventListener("end", () => {
      ended = true;
      events.close();
      if (partial) append("\n");
      pre.dataset.final = "1";
      pre.dataset.done = "1";
    });
    events.onerror = () => {
      if (ended) return;
      if (events.readyState === EventSource.CLOSED) {
        // Refused (the server is busy, or restarting): try again from where we are.
        setNote("live log paused; retrying…");
        setTimeout(() => listen(offset), 5000);
      } else {
        setNote("reconnecting…");
      }
    };
    events.onopen = () => setNote("");
  }
  start();
  if (!finalStates.includes(document.getElementById("state").textContent)) followOutlook();
})();
