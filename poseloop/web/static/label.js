// poseloop labeler: one frame at a time on a canvas; every change is POSTed and saved at once.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const query = token ? "?token=" + encodeURIComponent(token) : "";
const canvas = document.getElementById("canvas"), ctx = canvas.getContext("2d");
const folderSelect = document.getElementById("folder");
const RADIUS = 5, HIT = 9;
let data = null, frame = 0, animal = 0, part = 0, picture = new Image();
let zoom = 1, panX = 0, panY = 0, drag = null;

const api = (path) => path + query;
const names = () => data.multi ? data.individuals : [""];
const slots = () => {  // every (individual, bodypart) a frame can hold, in order
  const out = [];
  for (const i of names()) for (const b of data.bodyparts) out.push([i, b]);
  for (const u of data.unique) out.push(["single", u]);
  return out;
};
const image = () => data.images[frame];
const points = () => data.labels[image()] || (data.labels[image()] = []);
const find = (ind, bp) => points().find(p => p[0] === ind && p[1] === bp);
const current = () => {
  const s = slots(), partsPer = data.bodyparts.length;
  if (part < partsPer) return [names()[animal], data.bodyparts[part]];
  return s[names().length * partsPer + (part - partsPer)];
};
const partCount = () => data.bodyparts.length + data.unique.length;
const toImage = (e) => [(e.offsetX - panX) / zoom, (e.offsetY - panY) / zoom];
const colour = (bp) => `hsl(${360 * data.bodyparts.concat(data.unique).indexOf(bp) /
                             Math.max(1, partCount())}, 90%, 55%)`;

function publish() {  // state for tests and users: how many points this frame has
  document.body.dataset.loaded = "1";
  document.body.dataset.frame = image();
  document.body.dataset.points = JSON.stringify(points());
}

function draw() {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.setTransform(zoom, 0, 0, zoom, panX, panY);
  if (picture.complete) ctx.drawImage(picture, 0, 0);
  const [ci, cb] = current();
  for (const [ind, bp, x, y] of points()) {
    ctx.beginPath();
    ctx.arc(x, y, RADIUS / zoom, 0, 2 * Math.PI);
    ctx.fillStyle = colour(bp);
    ctx.fill();
    ctx.lineWidth = (ind === ci && bp === cb ? 3 : 1) / zoom;
    ctx.strokeStyle = ind === ci && bp === cb ? "#fff" : "#000";
    ctx.stroke();
    if (data.multi) {
      ctx.fillStyle = "#fff";
      ctx.font = `${10 / zoom}px sans-serif`;
      ctx.fillText(ind, x + 6 / zoom, y - 6 / zoom);
    }
  }
  showList();
  publish();
}

function showList() {
  const [ci, cb] = current();
  document.getElementById("where").textContent =
    `${data.folder} — frame ${frame + 1}/${data.images.length}: ${image()}`;
  document.getElementById("current").textContent =
    data.multi ? `animal ${ci} · bodypart ${cb}` : `bodypart ${cb}`;
  const list = document.getElementById("parts");
  list.innerHTML = "";
  for (const bp of data.bodyparts.concat(data.unique)) {
    const li = document.createElement("li");
    const ind = data.unique.includes(bp) ? "single" : ci;
    li.textContent = bp;
    if (bp === cb) li.className = "current";
    else if (find(ind, bp)) li.className = "done";
    if (bp === cb && find(ind, bp)) li.className = "current done";
    list.appendChild(li);
  }
}

function save(ind, bp, xy) {
  const body = {folder: data.folder, image: image(), individual: ind, bodypart: bp,
                x: xy ? xy[0] : null, y: xy ? xy[1] : null};
  return fetch(api("api/label"), {method: "POST", headers: {"Content-Type": "application/json"},
                                  body: JSON.stringify(body)})
    .then(r => { if (!r.ok) r.json().then(e => alert(e.error)); });
}

function place(ind, bp, xy) {
  const list = points(), at = list.findIndex(p => p[0] === ind && p[1] === bp);
  if (xy) { if (at >= 0) list[at] = [ind, bp, xy[0], xy[1]]; else list.push([ind, bp, ...xy]); }
  else if (at >= 0) list.splice(at, 1);
  draw();
  return save(ind, bp, xy);
}

function hit(e) {
  const [x, y] = toImage(e);
  let best = null, bestD = HIT / zoom;
  for (const p of points()) {
    const d = Math.hypot(p[2] - x, p[3] - y);
    if (d <= bestD) { best = p; bestD = d; }
  }
  return best;
}

function fit() {
  const box = canvas.parentElement.getBoundingClientRect();
  canvas.width = Math.max(320, Math.floor(box.width));
  canvas.height = Math.max(240, Math.floor(window.innerHeight - box.top - 20));
  zoom = Math.min(canvas.width / picture.width, canvas.height / picture.height, 1);
  panX = 0; panY = 0;
  draw();
  document.body.dataset.ready = image();  // the frame's picture is shown
}

function showFrame(i) {
  frame = (i + data.images.length) % data.images.length;
  picture = new Image();
  picture.onload = fit;
  picture.src = api(`api/image/${encodeURIComponent(data.folder)}/${encodeURIComponent(image())}`);
  draw();
}

function loadFolder(name) {
  return fetch(api(`api/folder/${encodeURIComponent(name)}`)).then(r => r.json()).then(d => {
    data = d; animal = 0; part = 0;
    showFrame(0);
  });
}

canvas.addEventListener("mousedown", (e) => {
  canvas.focus();
  if (e.button !== 0) return;
  const p = hit(e);
  drag = {x: e.offsetX, y: e.offsetY, point: p, moved: false, panX, panY};
});
canvas.addEventListener("mousemove", (e) => {
  if (!drag) return;
  if (Math.hypot(e.offsetX - drag.x, e.offsetY - drag.y) > 3) drag.moved = true;
  if (!drag.moved) return;
  if (drag.point) { [drag.point[2], drag.point[3]] = toImage(e); draw(); }
  else { panX = drag.panX + e.offsetX - drag.x; panY = drag.panY + e.offsetY - drag.y; draw(); }
});
canvas.addEventListener("mouseup", (e) => {
  if (!drag) return;
  const d = drag;
  drag = null;
  if (d.point && d.moved) { place(d.point[0], d.point[1], toImage(e)); return; }
  if (d.point && !d.moved) {  // select it: it becomes the current part
    const i = data.bodyparts.indexOf(d.point[1]);
    part = i >= 0 ? i : data.bodyparts.length + data.unique.indexOf(d.point[1]);
    if (data.multi && i >= 0) animal = data.individuals.indexOf(d.point[0]);
    draw();
    return;
  }
  if (!d.moved) {
    const [ind, bp] = current();
    place(ind, bp, toImage(e));
    part = (part + 1) % partCount();
    draw();
  }
});
canvas.addEventListener("contextmenu", (e) => {
  e.preventDefault();
  const p = hit(e);
  if (p) place(p[0], p[1], null);
});
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const [x, y] = toImage(e), factor = e.deltaY < 0 ? 1.25 : 0.8;
  zoom *= factor;
  panX = e.offsetX - x * zoom; panY = e.offsetY - y * zoom;
  draw();
}, {passive: false});
document.addEventListener("keydown", (e) => {
  if (!data) return;
  const k = e.key;
  if (k === "ArrowRight" || k === "n") showFrame(frame + 1);
  else if (k === "ArrowLeft" || k === "p") showFrame(frame - 1);
  else if (k === "ArrowDown" || k === "Tab") { part = (part + 1) % partCount(); draw(); }
  else if (k === "ArrowUp") { part = (part - 1 + partCount()) % partCount(); draw(); }
  else if (k === "a" && data.multi) { animal = (animal + 1) % names().length; draw(); }
  else if (k === "Delete" || k === "Backspace") { const [i, b] = current(); place(i, b, null); }
  else if (k === "0") fit();
  else return;
  e.preventDefault();
});
window.addEventListener("resize", () => { if (data) fit(); });

fetch(api("api/project")).then(r => r.json()).then(p => {
  for (const f of p.folders) {
    const o = document.createElement("option");
    o.value = o.textContent = f;
    folderSelect.appendChild(o);
  }
  folderSelect.onchange = () => loadFolder(folderSelect.value);
  return loadFolder(p.folders[0]);
});
