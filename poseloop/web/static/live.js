// poseloop live page: frames (binary JPEG) and status (JSON) over one WebSocket.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const query = token ? "?token=" + encodeURIComponent(token) : "";
const img = document.getElementById("frame");
const counters = document.getElementById("counters");
const events = document.getElementById("events");
const recordButton = document.getElementById("record");
const stopButton = document.getElementById("stop");
let total = 0, shown = 0, shownAt = performance.now(), shownRate = 0, lastUrl = null;
let recording = null;

function post(path, body) {
  return fetch(path + query, {method: "POST", headers: {"Content-Type": "application/json"},
                              body: JSON.stringify(body || {})}).then(r => r.json());
}

// One frame decodes at a time and only the newest waiting one follows it: setting img.src
// while a load is under way aborts that load, so on a busy machine a stream faster than the
// browser decodes would otherwise never finish one and the picture would freeze.
let loading = false, waiting = null;

function showFrame(blob) {
  if (loading) { waiting = blob; return; }
  loading = true;
  const url = URL.createObjectURL(blob);
  const next = () => {
    loading = false;
    if (waiting) { const blob = waiting; waiting = null; showFrame(blob); }
  };
  img.onerror = () => { URL.revokeObjectURL(url); next(); };  // not painted: not counted
  img.onload = () => {
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = url;
    shown += 1;
    total += 1;
    document.body.dataset.framesShown = total;  // cumulative, painted: tests and benchmarks read it
    const now = performance.now();
    if (now - shownAt >= 1000) {
      shownRate = shown * 1000 / (now - shownAt);
      shown = 0; shownAt = now;
    }
    next();
  };
  img.src = url;
}

function drawHistogram(h) {
  const canvas = document.getElementById("histogram"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const stages = Object.keys(h.counts), rowH = canvas.height / stages.length;
  const bins = h.bins_us.length + 1, barW = (canvas.width - 70) / bins;
  ctx.font = "10px monospace";
  stages.forEach((stage, i) => {
    const counts = h.counts[stage], top = Math.max(1, ...counts), y0 = (i + 1) * rowH - 4;
    ctx.fillStyle = "#ccc"; ctx.fillText(stage, 0, y0);
    counts.forEach((c, b) => {
      const hgt = (rowH - 10) * c / top;
      ctx.fillStyle = "#4a9"; ctx.fillRect(70 + b * barW, y0 - hgt, barW - 1, hgt);
    });
  });
  ctx.fillStyle = "#888";
  ctx.fillText("bins ≤ " + h.bins_us.join(" ") + " µs, >", 70, 10);
}

function showStatus(s) {
  counters.textContent =
    `poses ${s.poses}   frames to browser ${s.sent}   shown/s ${shownRate.toFixed(1)}\n` +
    `dropped: camera ${s.camera_dropped}   encoder ${s.dropped}   browser ${s.browser_skipped}` +
    `   rate cap ${s.rate_skipped}`;
  document.body.dataset.poses = s.poses;
  events.innerHTML = "";
  for (const e of s.events.slice().reverse()) {
    const li = document.createElement("li");
    li.textContent = `frame ${e.frame}: ${e.rule} -> ${e.action}` +
                     (e.animals ? ` (${e.animals})` : "");
    events.appendChild(li);
  }
  recording = s.recording;
  recordButton.disabled = recording === null;
  recordButton.textContent = recording === false ? "resume recording" : "pause recording";
  drawHistogram(s.histogram);
  showPoints3d(s.points3d);
}

function showPoints3d(rows) {  // [individual, bodypart, x, y, z, likelihood]; null in 2D
  const pre = document.getElementById("points3d");
  pre.hidden = document.getElementById("points3d-title").hidden = !rows;
  if (!rows) return;
  const num = (v, digits) => (v === null ? "–" : v.toFixed(digits)).padStart(8);
  pre.textContent = rows.map(([ind, part, x, y, z, p]) =>
    `${ind} ${part}`.padEnd(20) + num(x, 1) + num(y, 1) + num(z, 1) + num(p, 2)).join("\n");
}

recordButton.onclick = () => post("api/record", {on: !recording}).then(r => {
  recording = r.recording;
  recordButton.textContent = recording ? "pause recording" : "resume recording";
});
stopButton.onclick = () => post("api/stop").then(() => {
  stopButton.disabled = true; stopButton.textContent = "stopping…";
});

const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host +
                         "/ws" + query);
ws.binaryType = "blob";
ws.onmessage = (m) => {
  if (typeof m.data !== "string") { showFrame(m.data); return; }
  const msg = JSON.parse(m.data);
  if (msg.type === "hello") document.getElementById("model").textContent =
    `${msg.model} — ${msg.individuals.join(", ")}`;
  else if (msg.type === "status") showStatus(msg);
};
ws.onclose = () => { document.body.dataset.closed = "1"; counters.textContent += "\n(run ended)"; };
