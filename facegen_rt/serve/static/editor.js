// The drag editor page: one session at a time, edited over the JSON API, dragged over a
// WebSocket that streams frames. `window.editor` exposes the state (tests read it).
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const maskCanvas = document.createElement("canvas");
const image = new Image();

const editor = window.editor = {
  session: null,     // the session id
  resolution: 256,
  pairs: [],         // [{handle: [x, y], target: [x, y]}]
  pending: null,     // a handle waiting for its target
  maskPainted: false,
  running: false,
  step: 0,
  frames: 0,         // frames received during the current or last drag
  distances: [],
  lastReason: null,  // why the last drag ended: done | stopped | max_steps
  lastError: null,
  image: null,       // data URL of the image shown
  ready: false,      // an image is shown
};

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  if (isError) editor.lastError = text;
}

async function api(method, path, body, raw = false) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = raw ? body : JSON.stringify(body);
    init.headers["content-type"] = raw ? "application/octet-stream" : "application/json";
  }
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || `${method} ${path}: ${response.status}`);
  return data;
}

function showSession(s) {
  editor.session = s.id;
  editor.resolution = s.resolution;
  editor.step = s.steps;
  editor.pairs = s.points.map((p) => ({ handle: p.handle, target: p.target }));
  for (const c of [canvas, maskCanvas]) {
    if (c.width !== s.resolution) { c.width = c.height = s.resolution; }
  }
  showImage(s.image);
}

function showImage(dataUrl) {
  editor.image = dataUrl;
  image.onload = () => { editor.ready = true; draw(); };
  image.src = dataUrl;
}

function draw() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (image.complete && image.naturalWidth) ctx.drawImage(image, 0, 0);
  if (editor.maskPainted) {
    ctx.globalAlpha = 0.35;
    ctx.drawImage(maskCanvas, 0, 0);
    ctx.globalAlpha = 1;
  }
  const dot = (xy, color) => {
    ctx.fillStyle = color;
    ctx.beginPath(); ctx.arc(xy[0], xy[1], 3, 0, 2 * Math.PI); ctx.fill();
  };
  for (const p of editor.pairs) {
    ctx.strokeStyle = "white"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(...p.handle); ctx.lineTo(...p.target); ctx.stroke();
    dot(p.handle, "red"); dot(p.target, "blue");
  }
  if (editor.pending) dot(editor.pending, "red");
}

function canvasXY(event) {
  const r = canvas.getBoundingClientRect();
  const x = (event.clientX - r.left) * canvas.width / r.width;
  const y = (event.clientY - r.top) * canvas.height / r.height;
  const clamp = (v) => Math.min(canvas.width - 1, Math.max(0, Math.round(v)));
  return [clamp(x), clamp(y)];
}

async function newSession(seed) {
  status("generating…");
  try {
    showSession(await api("POST", "/api/sessions", { seed }));
    editor.pending = null;
    clearMask();
    status(`seed ${seed}: click a handle, then its target`);
  } catch (e) { status(e.message, true); }
}

async function sendPoints() {
  try {
    showSession(await api("PUT", `/api/sessions/${editor.session}/points`, { points: editor.pairs }));
  } catch (e) { status(e.message, true); throw e; }
}

function clearMask() {
  maskCanvas.getContext("2d").clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  editor.maskPainted = false;
  draw();
}

function paintMask(event) {
  const [x, y] = canvasXY(event);
  const m = maskCanvas.getContext("2d");
  m.fillStyle = "rgb(255, 220, 0)";
  m.beginPath(); m.arc(x, y, Math.max(4, editor.resolution / 24), 0, 2 * Math.PI); m.fill();
  editor.maskPainted = true;
  draw();
}

let painting = false;
canvas.addEventListener("mousedown", async (event) => {
  if (!editor.ready || editor.running) return;
  if ($("mode-mask").checked) { painting = true; paintMask(event); return; }
  const xy = canvasXY(event);
  if (!editor.pending) { editor.pending = xy; draw(); return; }
  editor.pairs.push({ handle: editor.pending, target: xy });
  editor.pending = null;
  draw();
  try { await sendPoints(); status(`${editor.pairs.length} point(s); press Start`); } catch (e) { /* shown */ }
});
canvas.addEventListener("mousemove", (event) => { if (painting) paintMask(event); });
window.addEventListener("mouseup", () => { painting = false; });

let socket = null;
function openSocket() {
  return new Promise((resolve, reject) => {
    if (socket && socket.readyState === WebSocket.OPEN && socket.sessionId === editor.session) {
      resolve(socket); return;
    }
    if (socket) socket.close();
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/api/sessions/${editor.session}/drag`);
    ws.sessionId = editor.session;
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("the WebSocket could not connect"));
    ws.onmessage = (event) => onMessage(JSON.parse(event.data));
    ws.onclose = () => { if (editor.running) setRunning(false); };
    socket = ws;
  });
}

function onMessage(msg) {
  if (msg.type === "error") { setRunning(false); status(msg.message, true); return; }
  editor.step = msg.step;
  editor.distances = msg.distances;
  editor.pairs = msg.handles.map((h, i) => ({ handle: h, target: msg.targets[i] }));
  editor.frames += 1;
  showImage(msg.image);
  const dist = msg.distances.length ? Math.max(...msg.distances).toFixed(1) : "-";
  if (msg.type === "finished") {
    editor.lastReason = msg.reason;
    setRunning(false);
    status(`finished (${msg.reason}) at step ${msg.step}, distance ${dist} px`);
  } else {
    status(`step ${msg.step}, distance ${dist} px`);
  }
}

function setRunning(on) {
  editor.running = on;
  $("start").disabled = on;
  $("stop").disabled = !on;
}

$("start").addEventListener("click", async () => {
  if (!editor.pairs.length) { status("place a handle and a target first", true); return; }
  try {
    await sendPoints();
    const mask = editor.maskPainted ? maskCanvas.toDataURL("image/png") : null;
    await api("PUT", `/api/sessions/${editor.session}/mask`, { mask });
    const ws = await openSocket();
    editor.frames = 0;
    editor.lastReason = null;
    setRunning(true);
    ws.send(JSON.stringify({ action: "start", steps: Number($("steps").value), frame_every: 1 }));
    status("dragging…");
  } catch (e) { setRunning(false); status(e.message, true); }
});
$("stop").addEventListener("click", () => {
  if (socket) socket.send(JSON.stringify({ action: "stop" }));
});
for (const action of ["undo", "reset"]) {
  $(action).addEventListener("click", async () => {
    try {
      showSession(await api("POST", `/api/sessions/${editor.session}/${action}`));
      status(`${action}: step ${editor.step}`);
    } catch (e) { status(e.message, true); }
  });
}
$("new-image").addEventListener("click", () => newSession(Number($("seed").value)));
$("clear-points").addEventListener("click", async () => {
  editor.pairs = []; editor.pending = null; draw();
  try { await sendPoints(); status("points cleared"); } catch (e) { /* shown */ }
});
$("clear-mask").addEventListener("click", clearMask);
$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  status("inverting the photo…");
  try {
    showSession(await api("POST", "/api/sessions/upload", await file.arrayBuffer(), true));
    editor.pending = null;
    clearMask();
    status("photo inverted: click a handle, then its target");
  } catch (e) { status(e.message, true); }
});

newSession(Number($("seed").value));
