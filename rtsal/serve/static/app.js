// rtsal serve: the page. Camera frames go to the server over one WebSocket as JPEG (4-byte frame id first);
// the newest result comes back (frame id, JSON header, JPEG). A few frames may be in flight (one per inference
// stream of the server, at least 2); the server keeps only the newest frame of each page, so nothing queues.
"use strict";

const token = document.body.dataset.token;
const q = (id) => document.getElementById(id);
const ui = {
  view: q("view"), status: q("status"), camera: q("camera"), viewSelect: q("view-select"), method: q("method"),
  cmap: q("cmap"), alpha: q("alpha"), alphaOut: q("alpha-out"), smooth: q("smooth"), smoothOut: q("smooth-out"),
  pause: q("pause"), top5: q("top5"), fps: q("hud-fps"), latency: q("hud-latency"), overhead: q("hud-overhead"),
  engine: q("hud-engine"), frames: q("hud-frames"), upload: q("upload"), uploadStatus: q("upload-status"), uploadResult: q("upload-result"),
  download: q("download"), serverFps: q("server-fps"), serverFrames: q("server-frames"),
  video: q("camera-video"), grab: q("grab"),
};
const ctx = ui.view.getContext("2d");
const grabCtx = ui.grab.getContext("2d");

// What the tests and the benchmarks read (window.rtsal.stats).
const stats = { displayed: 0, sent: 0, fps: 0, latencyMedian: null, latencies: [], top: [], method: null,
                view: null, header: null, errors: [], closed: null, upload: null };
window.rtsal = { stats };

let ws = null, hello = null, stream = null, paused = false, encoding = false;
let nextId = 1;
const inFlight = new Map();  // frame id -> capture time (performance.now())
const shownTimes = [];

function api(path) { return `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`; }
function setStatus(text, kind) { ui.status.textContent = text; ui.status.className = `status ${kind || ""}`; }
function fill(select, names, value) {
  select.replaceChildren(...names.map((n) => new Option(n, n)));
  select.value = value;
}
function median(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function settings() {
  return { type: "settings", method: ui.method.value, view: ui.viewSelect.value, cmap: ui.cmap.value,
           alpha: Number(ui.alpha.value), smooth: Number(ui.smooth.value) };
}
function sendSettings() {
  ui.alphaOut.textContent = Number(ui.alpha.value).toFixed(2);
  ui.smoothOut.textContent = Number(ui.smooth.value).toFixed(2);
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(settings()));
}

// -- the camera ------------------------------------------------------------------------------------------------
async function startCamera(deviceId) {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  const video = { width: { ideal: 640 }, height: { ideal: 480 } };
  if (deviceId) video.deviceId = { exact: deviceId };
  stream = await navigator.mediaDevices.getUserMedia({ video, audio: false });
  ui.video.srcObject = stream;
  await ui.video.play();
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  const current = stream.getVideoTracks()[0].getSettings().deviceId;
  ui.camera.replaceChildren(...devices.map((d, i) => new Option(d.label || `camera ${i + 1}`, d.deviceId)));
  if (current) ui.camera.value = current;
  watchFrames();
}

function watchFrames() {
  const v = ui.video;
  if ("requestVideoFrameCallback" in v) {
    const onFrame = () => { pump(); v.requestVideoFrameCallback(onFrame); };
    v.requestVideoFrameCallback(onFrame);
  } else {
    setInterval(pump, 1000 / 60);
  }
}

function pump() {
  if (paused || encoding || !ws || ws.readyState !== WebSocket.OPEN || !hello) return;
  const v = ui.video;
  if (v.readyState < 2 || !v.videoWidth) return;
  const now = performance.now();
  for (const [id, t] of inFlight) if (now - t > 2000) inFlight.delete(id);  // dropped on the way: forget
  if (inFlight.size >= hello.inflight) return;
  if (ui.grab.width !== v.videoWidth || ui.grab.height !== v.videoHeight) {
    ui.grab.width = v.videoWidth; ui.grab.height = v.videoHeight;
  }
  grabCtx.drawImage(v, 0, 0);
  const id = nextId++ >>> 0;
  const tCapture = performance.now();
  inFlight.set(id, tCapture);
  encoding = true;
  ui.grab.toBlob(async (blob) => {
    encoding = false;
    if (!blob || !ws || ws.readyState !== WebSocket.OPEN) { inFlight.delete(id); return; }
    const body = new Uint8Array(4 + blob.size);
    new DataView(body.buffer).setUint32(0, id);
    body.set(new Uint8Array(await blob.arrayBuffer()), 4);
    ws.send(body);
    stats.sent++;
  }, "image/jpeg", 0.8);
}

// -- results ---------------------------------------------------------------------------------------------------
async function onResult(buffer) {
  const dv = new DataView(buffer);
  const id = dv.getUint32(0);
  const n = dv.getUint32(4);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, n)));
  const bitmap = await createImageBitmap(new Blob([new Uint8Array(buffer, 8 + n)], { type: "image/jpeg" }));
  if (ui.view.width !== bitmap.width || ui.view.height !== bitmap.height) {
    ui.view.width = bitmap.width; ui.view.height = bitmap.height;
  }
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const shown = performance.now();
  const tCapture = inFlight.get(id);
  for (const k of [...inFlight.keys()]) if (k <= id) inFlight.delete(k);  // results come in order
  if (tCapture !== undefined) {
    stats.latencies.push(shown - tCapture);
    if (stats.latencies.length > 10000) stats.latencies.splice(0, 5000);
  }
  shownTimes.push(shown);
  while (shownTimes.length && shown - shownTimes[0] > 2000) shownTimes.shift();
  stats.displayed++;
  stats.fps = shownTimes.length > 1 ? (shownTimes.length - 1) / ((shown - shownTimes[0]) / 1000) : 0;
  stats.latencyMedian = median(stats.latencies.slice(-60));
  stats.top = header.top; stats.method = header.method; stats.view = header.view; stats.header = header;
  drawHud(header);
  pump();
}

function drawHud(h) {
  ui.fps.textContent = stats.fps.toFixed(1);
  ui.frames.textContent = stats.displayed;
  ui.latency.textContent = stats.latencyMedian === null ? "–" : stats.latencyMedian.toFixed(0);
  ui.overhead.textContent = h.saliency_ms === null ? "–"
    : `${h.saliency_ms.toFixed(1)} ms (+${h.saliency_overhead_pct.toFixed(1)}%)`;
  ui.engine.textContent = `${h.method} · ${h.engine || "?"} · forward ${h.forward_ms === null ? "–" : h.forward_ms.toFixed(1)} ms`;
  ui.top5.replaceChildren(...h.top.map(([name, p]) => {
    const li = document.createElement("li");
    li.textContent = `${name} ${(100 * p).toFixed(1)}%`;
    return li;
  }));
}

// -- the connection ------------------------------------------------------------------------------------------
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") { onResult(ev.data); return; }
    const msg = JSON.parse(ev.data);
    if (msg.type === "hello") {
      hello = msg;
      setStatus(`connected · ${msg.model}`, "ok");
      sendSettings();
      pump();
    } else if (msg.type === "error") {
      stats.errors.push(msg.message);
      setStatus(msg.message, "bad");
    }
  };
  ws.onclose = (ev) => {
    stats.closed = ev.code;
    inFlight.clear();
    if (ev.code !== 1000) setStatus(`disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""})`, "bad");
  };
}

// -- uploads ---------------------------------------------------------------------------------------------------
async function uploadFile(file) {
  ui.uploadStatus.textContent = `explaining ${file.name}…`;
  ui.uploadResult.replaceChildren();
  ui.download.classList.add("hidden");
  const s = settings();
  const url = api(`api/explain?settings=${encodeURIComponent(JSON.stringify(s))}`);
  const t0 = performance.now();
  try {
    const r = await fetch(url, { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
    if (!r.ok) throw new Error((await r.text()).trim() || r.statusText);
    const blob = await r.blob();
    const top = JSON.parse(r.headers.get("X-Rtsal-Top") || "[]");
    const ext = r.headers.get("X-Rtsal-Extension") || "bin";
    const href = URL.createObjectURL(blob);
    const el = blob.type.startsWith("video/") ? Object.assign(document.createElement("video"), { controls: true, loop: true, muted: true, autoplay: true })
      : document.createElement("img");
    el.src = href;
    el.id = "upload-output";
    ui.uploadResult.replaceChildren(el);
    const stem = file.name.replace(/\.[^.]*$/, "") || "upload";
    ui.download.href = href;
    ui.download.download = `${stem}-rtsal.${ext}`;
    ui.download.classList.remove("hidden");
    const frames = r.headers.get("X-Rtsal-Frames");
    ui.uploadStatus.textContent = `${top.length ? top[0][0] + " " + (100 * top[0][1]).toFixed(1) + "%" : ""}` +
      ` · ${frames} frame(s) in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    stats.upload = { ok: true, type: blob.type, bytes: blob.size, top, frames: Number(frames) };
  } catch (err) {
    ui.uploadStatus.textContent = `failed: ${err.message}`;
    stats.upload = { ok: false, error: err.message };
  }
}

async function pollStats() {
  try {
    const r = await fetch(api("api/stats"));
    if (r.ok) {
      const s = await r.json();
      ui.serverFps.textContent = s.fps.toFixed(1);
      ui.serverFrames.textContent = s.frames;
    }
  } catch (err) { /* the server went away: the WebSocket says so */ }
}

async function main() {
  const info = await (await fetch(api("api/info"))).json();
  fill(ui.viewSelect, info.views, info.defaults.view);
  fill(ui.method, info.methods, info.defaults.method);
  fill(ui.cmap, info.cmaps, info.defaults.cmap);
  ui.alpha.value = info.defaults.alpha;
  ui.smooth.value = info.defaults.smooth;
  for (const el of [ui.viewSelect, ui.method, ui.cmap, ui.alpha, ui.smooth]) el.addEventListener("input", sendSettings);
  ui.camera.addEventListener("change", () => startCamera(ui.camera.value));
  ui.pause.addEventListener("click", () => {
    paused = !paused;
    ui.pause.textContent = paused ? "Resume camera" : "Pause camera";
    if (!paused) pump();
  });
  ui.upload.addEventListener("change", () => { if (ui.upload.files.length) uploadFile(ui.upload.files[0]); });
  connect();
  setInterval(pollStats, 1000);
  try {
    await startCamera();
  } catch (err) {
    setStatus(`no camera (${err.name}); you can still upload a file`, "bad");
  }
}

main();
