// rtsal review page: scrub an explained video frame by frame. Everything it needs is in this file: the
// data (JSON) and the review video (base64 MP4, an atlas per frame: overlay on top, grey map tiles below).
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const D = JSON.parse($("rtsal-data").textContent);
  const F = D.frames, N = F.length, L = D.layout;
  const video = $("video"), scrub = $("scrub"), overlay = $("overlay"), timeline = $("timeline");
  const octx = overlay.getContext("2d");
  const lut = D.lut; // 256 x [r, g, b]
  let want = 0, shown = -1, pending = -1, playing = false, ready = false;
  const state = document.body.dataset;

  // -- the video, from the base64 text inside this page (a blob: URL, no network) -------------------------
  function blobOf(b64, type) {
    const bin = atob(b64), n = bin.length, u = new Uint8Array(n);
    for (let i = 0; i < n; i++) u[i] = bin.charCodeAt(i);
    return new Blob([u], { type });
  }
  video.src = URL.createObjectURL(blobOf($("rtsal-video").textContent.trim(), "video/mp4"));

  // -- time <-> frame ---------------------------------------------------------------------------------------
  const clamp = (i) => Math.max(0, Math.min(N - 1, i | 0));
  function timeOf(i) {
    const t = F[i].t, next = i + 1 < N ? F[i + 1].t : t + 0.04;
    return t + Math.min(0.3 * (next - t), 0.02);
  }
  function frameAt(time) {
    let lo = 0, hi = N - 1;
    while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (F[mid].t <= time + 1e-6) lo = mid; else hi = mid - 1; }
    return lo;
  }
  function fmt(t) {
    const ms = Math.round(t * 1000), h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60;
    const s = Math.floor(ms / 1000) % 60, r = ms % 1000, p = (x, n) => String(x).padStart(n, "0");
    return `${h ? p(h, 2) + ":" : ""}${p(m, 2)}:${p(s, 2)}.${p(r, 3)}`;
  }
  const label = (c) => (D.labels[c] !== undefined ? D.labels[c] : `class ${c}`);

  // -- class colours: most frequent top-1 classes first ------------------------------------------------------
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79", "#ad494a", "#637939"];
  const freq = new Map();
  for (const f of F) if (f.top.length) freq.set(f.top[0][0], (freq.get(f.top[0][0]) || 0) + 1);
  const order = [...freq.entries()].sort((a, b) => b[1] - a[1]).map((e) => e[0]);
  const colour = new Map(order.map((c, k) => [c, k < PALETTE.length ? PALETTE[k] : "#9aa0a6"]));

  // -- drawing one frame ----------------------------------------------------------------------------------------
  overlay.width = L.width; overlay.height = L.height;
  const tiles = L.tiles.map(([x, y, w, h], k) => {
    const fig = document.createElement("figure"), c = document.createElement("canvas"), cap = document.createElement("figcaption");
    c.width = w; c.height = h; cap.textContent = D.tiles[k]; cap.title = D.tiles[k];
    c.setAttribute("role", "img"); c.setAttribute("aria-label", D.tiles[k]);
    fig.append(c, cap); $("maps").append(fig);
    return { x, y, w, h, ctx: c.getContext("2d", { willReadFrequently: true }) };
  });

  function draw() {
    octx.drawImage(video, 0, 0, L.width, L.height, 0, 0, L.width, L.height);
    for (const t of tiles) {
      t.ctx.drawImage(video, t.x, t.y, t.w, t.h, 0, 0, t.w, t.h);
      const img = t.ctx.getImageData(0, 0, t.w, t.h), d = img.data;
      for (let p = 0; p < d.length; p += 4) {
        const v = lut[d[p + 1]]; d[p] = v[0]; d[p + 1] = v[1]; d[p + 2] = v[2];
      }
      t.ctx.putImageData(img, 0, 0);
    }
  }

  function showText(i) {
    const f = F[i];
    $("timecode").value = `${fmt(f.t)}  frame ${i + 1}/${N}`;
    const tops = f.top.map(([c, p]) => `<span class="cls" style="background:${colour.get(c) || "#9aa0a6"}"></span>` +
      `${esc(label(c))} ${(100 * p).toFixed(1)}%`).join(" &nbsp; ");
    const err = f.err === null ? "n/a" : f.err.toFixed(4);
    $("now").innerHTML = `<p>Source frame #${f.i} &middot; ${tops}</p><p>Warping error from the previous frame: ${err}` +
      (f.valid === null ? "" : ` (${(100 * f.valid).toFixed(0)}% of pixels trusted)`) + "</p>";
  }

  function shownFrame(i) {
    shown = i; state.frame = String(i);
    if (!ready) { ready = true; state.ready = "1"; }
    drawCursor();
  }

  // -- seeking: one seek in flight; the latest wish wins -----------------------------------------------------------
  function go(i) {
    want = clamp(i);
    scrub.value = String(want);
    showText(want);
    if (playing) video.pause();
    if (pending < 0) seek();
  }
  function seek() {
    pending = want; state.frame = "";
    video.currentTime = timeOf(pending);
  }
  video.addEventListener("seeked", () => {
    if (playing) return;
    draw();
    const got = pending; pending = -1;
    if (want !== got) { seek(); return; }
    shownFrame(got);
  });
  video.addEventListener("loadeddata", () => { if (pending < 0) seek(); });

  // -- playing: follow the frames the browser presents --------------------------------------------------------------
  function onFrame(_now, meta) {
    if (!playing) return;
    const i = frameAt(meta ? meta.mediaTime : video.currentTime);
    draw(); want = i; scrub.value = String(i); showText(i); shownFrame(i);
    schedule();
  }
  function schedule() {
    if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(onFrame);
    else requestAnimationFrame(() => onFrame(0, null));
  }
  function play() {
    if (playing) { video.pause(); return; }
    if (want >= N - 1) { want = 0; video.currentTime = timeOf(0); }
    playing = true; $("play").innerHTML = "&#10073;&#10073;"; $("play").setAttribute("aria-label", "pause");
    video.play().catch(() => { playing = false; });
    schedule();
  }
  video.addEventListener("pause", () => {
    playing = false; $("play").innerHTML = "&#9654;"; $("play").setAttribute("aria-label", "play");
    go(frameAt(video.currentTime));
  });
  video.addEventListener("ended", () => video.pause());

  // -- controls and keys -----------------------------------------------------------------------------------------------
  scrub.max = String(N - 1);
  scrub.addEventListener("input", () => go(+scrub.value));
  $("play").addEventListener("click", play);
  $("prev").addEventListener("click", () => go(want - 1));
  $("next").addEventListener("click", () => go(want + 1));
  const perSecond = N > 1 ? (N - 1) / Math.max(1e-3, F[N - 1].t - F[0].t) : 1;
  const eventFrames = () => visibleEvents().map((e) => e.f);
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement && e.target.type === "checkbox") return;
    const sec = Math.max(1, Math.round(perSecond));
    let to = null;
    if (e.key === "ArrowRight" || e.key === ".") to = want + (e.shiftKey ? sec : 1);
    else if (e.key === "ArrowLeft" || e.key === ",") to = want - (e.shiftKey ? sec : 1);
    else if (e.key === "PageDown") to = want + 10 * sec;
    else if (e.key === "PageUp") to = want - 10 * sec;
    else if (e.key === "Home") to = 0;
    else if (e.key === "End") to = N - 1;
    else if (e.key === " ") { e.preventDefault(); play(); return; }
    else if (e.key === "n" || e.key === "N") to = eventFrames().find((f) => f > want);
    else if (e.key === "p" || e.key === "P") to = eventFrames().reverse().find((f) => f < want);
    if (to === null || to === undefined) return;
    e.preventDefault(); // the range input would step on its own as well
    go(to);
  });

  // -- the timeline: class bands, probability, stability; click to jump ------------------------------------------------
  const stat = D.stability || {};
  const errs = F.map((f) => f.err).filter((e) => e !== null);
  const sorted = [...errs].sort((a, b) => a - b);
  const errMax = Math.max(1e-3, (sorted.length ? sorted[Math.floor(0.99 * (sorted.length - 1))] : 0) * 1.1, (stat.threshold || 0) * 1.2);
  const TRACKS = { band: [0, 34], prob: [44, 104], err: [116, 186] };
  let base = null;
  function xOf(i, w) { return N > 1 ? (i / (N - 1)) * (w - 1) : w / 2; }
  function drawTimeline() {
    const dpr = window.devicePixelRatio || 1, w = Math.max(200, timeline.clientWidth), h = 190;
    timeline.width = Math.round(w * dpr); timeline.height = Math.round(h * dpr);
    const c = timeline.getContext("2d", { willReadFrequently: true }); c.setTransform(dpr, 0, 0, dpr, 0, 0);
    c.fillStyle = "#fff"; c.fillRect(0, 0, w, h);
    // bands: runs of the same top-1 class
    let start = 0;
    c.font = "11px system-ui, sans-serif"; c.textBaseline = "middle";
    for (let i = 1; i <= N; i++) {
      const cls = F[start].top.length ? F[start].top[0][0] : -1;
      if (i < N && F[i].top.length && F[i].top[0][0] === cls) continue;
      const half = N > 1 ? (0.5 * w) / (N - 1) : w / 2;
      const x0 = Math.max(0, xOf(start, w) - half), x1 = Math.min(w, xOf(i - 1, w) + half);
      c.fillStyle = colour.get(cls) || "#9aa0a6"; c.fillRect(x0, TRACKS.band[0], Math.max(1, x1 - x0), TRACKS.band[1]);
      const name = label(cls);
      if (x1 - x0 > c.measureText(name).width + 8) { c.fillStyle = "#fff"; c.fillText(name, x0 + 4, TRACKS.band[1] / 2); }
      start = i;
    }
    const track = (y0, y1, value, vmax, col, mark) => {
      c.strokeStyle = "#e3e6ec"; c.strokeRect(0.5, y0 + 0.5, w - 1, y1 - y0);
      if (mark !== undefined && mark !== null) {
        const ym = y1 - (mark / vmax) * (y1 - y0);
        c.setLineDash([4, 3]); c.strokeStyle = "#999"; c.beginPath(); c.moveTo(0, ym); c.lineTo(w, ym); c.stroke(); c.setLineDash([]);
      }
      c.strokeStyle = col; c.lineWidth = 1.2; c.beginPath();
      let pen = false;
      for (let i = 0; i < N; i++) {
        const v = value(F[i]);
        if (v === null) { pen = false; continue; }
        const x = xOf(i, w), y = y1 - (Math.min(v, vmax) / vmax) * (y1 - y0);
        if (pen) c.lineTo(x, y); else c.moveTo(x, y);
        pen = true;
      }
      c.stroke();
    };
    track(TRACKS.prob[0], TRACKS.prob[1], (f) => (f.top.length ? f.top[0][1] : null), 1, "#1f6feb", D.low_confidence);
    track(TRACKS.err[0], TRACKS.err[1], (f) => f.err, errMax, "#c62828", stat.threshold);
    c.fillStyle = "#5b6475"; c.textBaseline = "top";
    c.fillText("top-1 probability", 4, TRACKS.prob[0] + 2);
    c.fillText(`warping error (temporal stability; 0 = steady, top = ${errMax.toFixed(3)})`, 4, TRACKS.err[0] + 2);
    base = c.getImageData(0, 0, timeline.width, timeline.height);
    drawCursor();
  }
  function drawCursor() {
    if (!base) return;
    const c = timeline.getContext("2d", { willReadFrequently: true }), dpr = window.devicePixelRatio || 1;
    const w = timeline.width / dpr;
    c.putImageData(base, 0, 0);
    const x = xOf(shown >= 0 ? shown : want, w);
    c.strokeStyle = "#000"; c.lineWidth = 1.5; c.beginPath(); c.moveTo(x, 0); c.lineTo(x, 190); c.stroke();
  }
  timeline.addEventListener("click", (e) => {
    const r = timeline.getBoundingClientRect();
    go(Math.round(((e.clientX - r.left) / Math.max(1, r.width - 1)) * (N - 1)));
  });
  window.addEventListener("resize", drawTimeline);
  $("legend").innerHTML = order.slice(0, PALETTE.length).map((cls) =>
    `<span style="--c:${colour.get(cls)}">${esc(label(cls))} (${freq.get(cls)})</span>`).join("") +
    (order.length > PALETTE.length ? `<span style="--c:#9aa0a6">${order.length - PALETTE.length} other classes</span>` : "");
  const sm = stat.summary || {};
  $("stability-summary").textContent = sm.n ? `Warping error over ${sm.n} frame pairs: mean ${sm.mean.toFixed(4)}, median ` +
    `${sm.median.toFixed(4)}, 95th percentile ${sm.p95.toFixed(4)}; unstable above ${stat.threshold === null ? "n/a" : stat.threshold.toFixed(4)} ` +
    `(flow: ${stat.flow}).` : "No temporal stability: fewer than two frames.";

  // -- events ---------------------------------------------------------------------------------------------------------
  const KIND = { top1: "top-1 change", low: "low confidence", unstable: "unstable attention" };
  const shownKinds = new Set(Object.keys(KIND));
  function visibleEvents() { return D.events.filter((e) => shownKinds.has(e.kind)); }
  function listEvents() {
    const ol = $("events"); ol.textContent = "";
    for (const e of visibleEvents()) {
      const li = document.createElement("li"), b = document.createElement("button");
      b.type = "button"; b.dataset.frame = String(e.f);
      b.innerHTML = `<img alt="" src="${e.thumb}"><span class="kind k-${e.kind}">${KIND[e.kind]}</span> ` +
        `${fmt(F[e.f].t)}<br>${esc(e.text)}`;
      b.addEventListener("click", () => go(e.f));
      li.append(b); ol.append(li);
    }
  }
  for (const box of document.querySelectorAll("#event-filter input")) {
    box.addEventListener("change", () => { box.checked ? shownKinds.add(box.dataset.kind) : shownKinds.delete(box.dataset.kind); listEvents(); });
  }
  for (const [k, n] of Object.entries(D.event_counts)) {
    const kept = D.events.filter((e) => e.kind === k).length;
    const span = document.querySelector(`[data-count="${k}"]`);
    if (span) span.textContent = kept < n ? `(${n}, first ${kept} listed)` : `(${n})`;
  }

  // -- run and settings tables ------------------------------------------------------------------------------------------
  function esc(s) { return String(s).replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]); }
  function table(el, obj) {
    el.innerHTML = Object.entries(obj).map(([k, v]) =>
      `<tr><td>${esc(k)}</td><td>${esc(typeof v === "object" && v !== null ? JSON.stringify(v) : v)}</td></tr>`).join("");
  }
  table($("run"), D.run); table($("settings"), D.settings);
  $("title").textContent = D.title; $("subtitle").textContent = D.subtitle;

  listEvents(); drawTimeline(); showText(0);
  window.rtsalReview = { go, frames: N, get frame() { return shown; } };
})();
