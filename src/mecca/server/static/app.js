// MECCA page: NiiVue viewer + the JSON API of `mecca serve` (docs/server.md).
// Clicks are sent in world (RAS mm) coordinates read from NiiVue's crosshair: NiiVue
// reorders voxels internally, so only millimetres mean the same thing on both sides.
// Safety rules: every element built from data gets it as textContent, dataset or a
// property (never innerHTML: names of files, folders and methods are data); the token never
// goes into a URL (see takeToken); every request carries X-Mecca-Client (the server's
// cross-site guard) and the token as an Authorization header; images and downloads are
// fetched with those headers and handed on as blob: URLs.
"use strict";

const TOKEN_KEY = "meccaToken";

function takeToken() {
  // a link may carry the token in its fragment (#token=..., which browsers never send to a
  // server): keep it in this tab's storage and remove it from the address bar at once
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

let token = takeToken();
const $ = (id) => document.getElementById(id);
const state = { sid: null, session: null, corner: null, busy: false, overlays: [], phases: {}, labels: [] };
window.mecca = state; // read by the browser tests

// window.nv: the viewer, for tests and profiling in the browser console
const nv = window.nv = new niivue.Niivue({ backColor: [0.07, 0.07, 0.07, 1], show3Dcrosshair: true });

function askToken() {
  // the server wants a token this tab does not have (or has wrong): ask once per refusal
  const given = window.prompt("This MECCA server needs its access token:");
  if (!given) return false;
  token = given.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  return true;
}

async function request(path, options = {}) {
  // fetch with the page's headers; on 401, ask for the token and try once more
  for (let attempt = 0; ; attempt++) {
    const headers = Object.assign({ "X-Mecca-Client": "page" }, options.headers || {});
    if (token) headers["Authorization"] = "Bearer " + token;
    const reply = await fetch(path, Object.assign({}, options, { headers }));
    if (reply.status !== 401 || attempt > 0 || !askToken()) return reply;
  }
}

async function blobUrl(path) {
  // a server file fetched with the headers, as a blob: URL (NiiVue, <img>, downloads)
  const reply = await request(path);
  if (!reply.ok) throw new Error(`${path.split("?")[0]}: HTTP ${reply.status}`);
  return URL.createObjectURL(await reply.blob());
}

async function download(path, name) {
  // a file saved by the browser without the token in any URL: fetch, then a blob link
  const url = await blobUrl(path);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function api(path, options = {}) {
  options = Object.assign({}, options);
  if (options.json !== undefined) {
    options.headers = Object.assign({}, options.headers || {}, { "Content-Type": "application/json" });
    options.body = JSON.stringify(options.json);
  }
  const reply = await request(path, options);
  const text = await reply.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
  if (!reply.ok) throw new Error((data && (data.error || data.detail)) || reply.statusText);
  return data;
}

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }
function status(text) { $("status").textContent = text; }
function mode() { return document.querySelector("input[name=mode]:checked").value; }

async function loadInfo() {
  const info = await api("/api/info");
  state.legend = info.overlay_legend;
  state.proposing = Object.fromEntries(info.methods.map((m) => [m.name, m.proposes]));
  $("method").replaceChildren(...info.methods.map((m) =>
    new Option(`${m.name} (${m.accepts.join(", ")})`, m.name)));
  $("root").replaceChildren(...info.roots.map((r) => new Option(r.name, String(r.index))));
  if (info.roots.length) await listFiles("");
}

function fileItem(path, folder, text) {
  const li = document.createElement("li");
  li.dataset.path = path;
  li.dataset.folder = String(folder);
  li.textContent = text;
  return li;
}

async function listFiles(folder) {
  const root = Number($("root").value || 0);
  const listing = await api(`/api/files?root=${root}&folder=${encodeURIComponent(folder)}`);
  const items = listing.entries.map((e) =>
    fileItem(folder ? `${folder}/${e.name}` : e.name, e.folder, (e.folder ? "\u{1F4C1} " : "") + e.name));
  if (folder) items.unshift(fileItem(folder.split("/").slice(0, -1).join("/"), true, ".."));
  $("files").replaceChildren(...items);
}

async function openSession(data) {
  state.labels = [{ sid: data.id, value: 1 }];
  state.sid = data.id;
  state.session = data;
  state.corner = null;
  state.overlays = [];
  state.loaded = false;
  const imageUrl = await blobUrl(`/api/sessions/${data.id}/image.nii.gz`);
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = imageUrl;
  await nv.loadVolumes([{ url: imageUrl, name: "image.nii.gz" }]);
  prepareDrawing();
  setView();
  update(data);
  state.loaded = true;
  status(`Session ${data.id.slice(0, 6)}: ${data.shape.join(" x ")} voxels. Draw the ROI (2 corners) or click.`);
}

function update(data) {
  state.session = data;
  $("undo").disabled = !data.can_undo;
  $("redo").disabled = !data.can_redo;
  $("reset").disabled = data.steps === 0;
  $("export").disabled = data.steps === 0;
  $("download").hidden = data.steps === 0;
  $("proposalsBox").hidden = !state.proposing[data.method];
  $("propose").disabled = !data.roi && data.steps === 0;
  clearProposals();
  const roi = data.roi ? `ROI ${data.roi[0].join(",")} - ${data.roi[1].join(",")}` : "no ROI yet";
  $("info").textContent = `${data.method}: ${data.steps} steps, ${roi}`;
  const label = state.labels.find((l) => l.sid === data.id);
  if (label) Object.assign(label, { method: data.method, steps: data.steps });
  renderLabels();
}

// Several labels on one image: each label is its own server session (own ROI, clicks,
// method, undo); the edited one shows in full, the others as blue outlines; "Export
// label map" merges them (POST /api/labelmap: an overlapped voxel goes to the label with
// the highest probability there). Values are 1, 2, ... in order of creation.
function renderLabels() {
  $("labels").replaceChildren(...state.labels.map((l) => {
    const radio = Object.assign(document.createElement("input"),
      { type: "radio", name: "label", value: l.sid, checked: l.sid === state.sid });
    const label = document.createElement("label");
    label.append(radio, ` label ${l.value}: ${l.method || ""}, ${l.steps || 0} steps`);
    return label;
  }));
  $("newLabel").disabled = !state.sid;
  $("removeLabel").disabled = state.labels.length < 2;
  $("exportLabels").disabled = !state.labels.some((l) => l.steps > 0);
}

async function newLabel() {
  const data = await api(`/api/sessions/${state.sid}/sibling`, { method: "POST", json: { method: $("method").value } });
  state.labels.push({ sid: data.id, value: Math.max(...state.labels.map((l) => l.value)) + 1 });
  state.sid = data.id;
  state.corner = null;
  status(`Label ${state.labels[state.labels.length - 1].value}: draw its ROI (2 corners) or click.`);
  return data;
}

async function switchLabel(sid) {
  const data = await api(`/api/sessions/${sid}`);
  state.sid = sid;
  state.corner = null;
  return data;
}

async function removeLabel() {
  const gone = state.sid;
  await api(`/api/sessions/${gone}`, { method: "DELETE" });
  state.labels = state.labels.filter((l) => l.sid !== gone);
  return switchLabel(state.labels[0].sid);
}

async function exportLabels() {
  const labels = state.labels.map((l) => ({ session: l.sid, value: l.value }));
  const done = await api("/api/labelmap", { method: "POST", json: { labels, name: $("labelMapName").value } });
  status(`Exported ${done.exported} (${labels.length} labels) to ${done.folder} in the server's state folder.`);
}

async function paintOtherLabels() {
  // the labels not being edited: their mask outlines, over the edited label's probability
  // colours but not over its mask outline or advice regions
  const outline = state.legend.find((row) => row.name === "mask outline").label;
  for (const l of state.labels) {
    if (l.sid === state.sid || !l.steps) continue;
    const reply = await request(`/api/sessions/${l.sid}/overlay?outline_only=true`);
    if (reply.status !== 200) continue;
    paintBox(new Uint8Array(await reply.arrayBuffer()), reply.headers.get("X-Mecca-Box"), outline);
    state.overlays.push(`label ${l.value} outline`);
  }
}

// Overlays live in NiiVue's drawing layer: one uint8 label volume on the image grid,
// uploaded as a single texture. Re-loading NIfTI overlays instead makes NiiVue rebuild
// every layer (seconds per click without a GPU). The server sends only the ROI box.
function prepareDrawing() {
  nv.createEmptyDrawing();
  // native voxel (i, j, k) -> index in NiiVue's RAS-ordered drawing, as its loadDrawing does
  const dims = nv.back.hdr.dims;
  const perm = nv.back.permRAS;
  const layout = [0, 0, 0];
  for (let s = 0; s < 3; s++) for (let a = 0; a < 3; a++) if (Math.abs(perm[s]) - 1 === a) layout[a] = s * Math.sign(perm[s]);
  let stride = 1;
  const instride = [1, 1, 1];
  const inflip = [false, false, false];
  for (let s = 0; s < 3; s++) {
    for (let a = 0; a < 3; a++) {
      if (Math.abs(layout[a]) !== s) continue;
      instride[a] = stride;
      inflip[a] = layout[a] < 0 || Object.is(layout[a], -0);
      stride *= dims[a + 1];
    }
  }
  state.rasLut = [0, 1, 2].map((a) => Int32Array.from({ length: dims[a + 1] },
    (_, c) => (inflip[a] ? dims[a + 1] - 1 - c : c) * instride[a]));
  state.lutSet = false;
}

function drawColormap(legend) {
  const cm = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  for (const row of legend) {
    cm.I.push(row.label);
    cm.R.push(row.rgba[0]); cm.G.push(row.rgba[1]); cm.B.push(row.rgba[2]); cm.A.push(row.rgba[3]);
    cm.labels.push(row.name);
  }
  return cm;
}

function ensureColormap() {
  if (state.lutSet) return;
  nv.setDrawColormap(drawColormap(state.legend));
  nv.setDrawOpacity(0.8);
  state.lutSet = true;
}

function paintBox(bytes, boxHeader, below = 256) {
  // the box's non-zero labels, over drawn labels below `below` only
  const [i0, j0, k0, ni, nj, nk] = boxHeader.split(",").map(Number);
  const [lx, ly, lz] = state.rasLut;
  const bitmap = nv.drawBitmap;
  let n = 0;
  for (let k = 0; k < nk; k++) {
    const zk = lz[k0 + k];
    for (let j = 0; j < nj; j++) {
      const yj = zk + ly[j0 + j];
      for (let i = 0; i < ni; i++, n++) {
        const at = yj + lx[i0 + i];
        if (bytes[n] && bitmap[at] < below) bitmap[at] = bytes[n];
      }
    }
  }
}

async function refreshOverlays() {
  const data = state.session;
  if (!nv.drawBitmap || !state.rasLut) prepareDrawing();
  nv.drawBitmap.fill(0);
  state.overlays = [];
  ensureColormap();
  if (data && data.last) {
    const prob = $("showProb").checked;
    const advice = $("showAdvice").checked;
    const reply = await request(`/api/sessions/${data.id}/overlay?prob=${prob}&advice=${advice}`);
    if (!reply.ok) throw new Error(`overlay: HTTP ${reply.status}`);
    const bytes = new Uint8Array(await reply.arrayBuffer());
    state.phases.overlay = performance.now();
    if (reply.status === 200) paintBox(bytes, reply.headers.get("X-Mecca-Box"));
    state.overlays.push(prob ? "probability" : "mask", "mask outline", ...(advice ? ["advice"] : []));
  }
  await paintOtherLabels();
  state.phases.paint = performance.now();
  nv.refreshDrawing(true);
  nv.gl.finish(); // the overlay is on screen when the GL work is done, not when it is queued
}

async function run(action, t0) {
  if (state.busy) return;
  state.busy = true;
  showError(null);
  try {
    const data = await action();
    state.phases = { request: performance.now() };
    update(data);
    await refreshOverlays();
    if (t0 !== undefined && data.last) {
      const end = performance.now();
      const ms = end - t0;
      const p = state.phases;
      state.lastLatencyMs = ms;
      // where the time went: server request, overlay fetch, painting the box, GL upload + draw
      state.lastPhasesMs = { request: p.request - t0, overlay: (p.overlay || p.request) - p.request,
        paint: p.paint - (p.overlay || p.request), draw: end - p.paint };
      status(`step ${data.last.step}: click-to-overlay ${ms.toFixed(0)} ms ` +
        `(server step ${data.last.total_ms.toFixed(0)} ms, method ${data.last.method_ms.toFixed(0)} ms), ` +
        `${data.last.mask_voxels} voxels in the mask`);
    }
  } catch (err) {
    showError(err);
  } finally {
    state.busy = false;
  }
}

// Proposal methods (partial): K thumbnails to pick from; a picked one previews in the
// viewer (its mask in the drawing layer), Accept makes it the next step.
function clearProposals() {
  for (const img of $("proposals").querySelectorAll("img")) URL.revokeObjectURL(img.src);
  state.proposals = [];
  state.picked = null;
  $("proposals").replaceChildren();
  $("accept").disabled = true;
}

function proposalFigure(p, src) {
  const img = Object.assign(document.createElement("img"), { src, alt: `proposal ${p.index + 1}` });
  img.dataset.index = String(p.index);
  const caption = document.createElement("figcaption");
  caption.textContent = `+${p.added_foreground} fg, +${p.added_background} bg`;
  const figure = document.createElement("figure");
  figure.append(img, caption);
  return figure;
}

async function propose() {
  const k = Number($("proposalCount").value) || 5;
  const reply = await api(`/api/sessions/${state.sid}/propose`, { method: "POST", json: { k } });
  clearProposals();
  state.proposals = reply.proposals;
  const sources = await Promise.all(reply.proposals.map((p) => blobUrl(
    `/api/sessions/${state.sid}/proposals/${p.index}/thumbnail.png?k=${reply.thumbnail_slice}`)));
  $("proposals").replaceChildren(...reply.proposals.map((p, n) => proposalFigure(p, sources[n])));
  status(`${reply.proposals.length} proposals (slice ${reply.thumbnail_slice}): pick one, then Accept.`);
}

async function pickProposal(index) {
  const reply = await request(`/api/sessions/${state.sid}/proposals/${index}/overlay`);
  if (!reply.ok) throw new Error(`proposal overlay: HTTP ${reply.status}`);
  const bytes = new Uint8Array(await reply.arrayBuffer());
  ensureColormap();
  nv.drawBitmap.fill(0);
  paintBox(bytes, reply.headers.get("X-Mecca-Box"));
  nv.refreshDrawing(true);
  state.picked = index;
  state.overlays = ["proposal " + (index + 1)];
  for (const img of $("proposals").querySelectorAll("img")) img.classList.toggle("picked", Number(img.dataset.index) === index);
  $("accept").disabled = false;
}

function setView() {
  const types = { multiplanar: nv.sliceTypeMultiplanar, axial: nv.sliceTypeAxial,
    coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal };
  nv.setSliceType(types[$("view").value]);
}

function clickMM(event) {
  // world mm of the clicked canvas position (null outside every slice tile)
  const dpr = nv.uiData.dpr || 1;
  const frac = nv.canvasPos2frac([event.offsetX * dpr, event.offsetY * dpr]);
  if (!frac || frac[0] < 0) return null;
  return Array.from(nv.frac2mm(frac, 0, true)).slice(0, 3);
}

async function onCanvasClick(mm, t0) {
  if (!state.sid || mode() === "look" || mm === null) return;
  if (mode() === "roi") {
    if (!state.corner) {
      state.corner = mm;
      status("First ROI corner set; click the opposite corner.");
      return;
    }
    const corners = [state.corner, mm];
    state.corner = null;
    await run(() => api(`/api/sessions/${state.sid}/roi`, { method: "PUT", json: { corners_mm: corners } }));
    status("ROI set. Now click (choose a click mode).");
    return;
  }
  const click = { kind: mode(), xyz_mm: mm };
  await run(() => api(`/api/sessions/${state.sid}/clicks`, { method: "POST", json: { clicks: [click], step: true } }), t0);
}

const MAX_STROKE_POINTS = 400;

async function sendStroke(points, t0) {
  // a scribble: its points (>= 0.5 mm apart) as fg or bg clicks, one refinement step
  if (!state.sid || !points.length) return;
  const kind = mode() === "scribble_bg" ? "background" : "foreground";
  const every = Math.ceil(points.length / MAX_STROKE_POINTS);
  const clicks = points.filter((_, n) => n % every === 0).map((mm) => ({ kind, xyz_mm: mm }));
  await run(() => api(`/api/sessions/${state.sid}/clicks`, { method: "POST", json: { clicks, step: true } }), t0);
}

function wireCanvas() {
  const canvas = $("gl");
  let down = null;
  let stroke = null;
  const addPoint = (e) => {
    const mm = clickMM(e);
    const last = stroke[stroke.length - 1];
    if (mm && (!last || Math.hypot(mm[0] - last[0], mm[1] - last[1], mm[2] - last[2]) >= 0.5)) stroke.push(mm);
  };
  canvas.addEventListener("pointerdown", (e) => {
    down = e.button === 0 ? [e.clientX, e.clientY] : null;
    stroke = down && mode().startsWith("scribble") ? [] : null;
    if (stroke) addPoint(e);
  });
  canvas.addEventListener("pointermove", (e) => { if (stroke) addPoint(e); });
  canvas.addEventListener("pointerup", (e) => {
    if (stroke && e.button === 0) {
      addPoint(e);
      const points = stroke;
      stroke = null;
      down = null;
      sendStroke(points, performance.now()).catch(showError);
      return;
    }
    if (!down || e.button !== 0) return;
    const moved = Math.hypot(e.clientX - down[0], e.clientY - down[1]);
    down = null;
    if (moved > 4) return; // a drag, not a click
    const t0 = performance.now();
    onCanvasClick(clickMM(e), t0);
  });
}

async function main() {
  await nv.attachTo("gl");
  wireCanvas();
  $("files").addEventListener("click", async (e) => {
    const li = e.target.closest("li");
    if (!li) return;
    try {
      if (li.dataset.folder === "true") return await listFiles(li.dataset.path);
      showError(null);
      status("Opening...");
      await openSession(await api("/api/sessions", { method: "POST",
        json: { root: Number($("root").value), path: li.dataset.path, method: $("method").value } }));
    } catch (err) { showError(err); }
  });
  $("root").addEventListener("change", () => listFiles("").catch(showError));
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (!file) return;
    try {
      status("Uploading...");
      const url = `/api/sessions/upload?filename=${encodeURIComponent(file.name)}&method=${$("method").value}`;
      // the server takes uploads only as octet-stream (or gzip/zip), never text/plain
      const headers = { "Content-Type": "application/octet-stream" };
      await openSession(await api(url, { method: "POST", body: file, headers }));
    } catch (err) { showError(err); }
  });
  $("method").addEventListener("change", async () => {
    if (!state.sid) return;
    await run(() => api(`/api/sessions/${state.sid}/method`, { method: "PUT", json: { method: $("method").value } }));
  });
  for (const name of ["undo", "redo", "reset"]) {
    $(name).addEventListener("click", () => run(() => api(`/api/sessions/${state.sid}/${name}`, { method: "POST" })));
  }
  $("propose").addEventListener("click", () => propose().catch(showError));
  $("newLabel").addEventListener("click", () => run(newLabel));
  $("removeLabel").addEventListener("click", () => run(removeLabel));
  $("labels").addEventListener("change", (e) => run(() => switchLabel(e.target.value)));
  $("exportLabels").addEventListener("click", () => exportLabels().catch(showError));
  $("proposals").addEventListener("click", (e) => {
    const img = e.target.closest("img");
    if (img) pickProposal(Number(img.dataset.index)).catch(showError);
  });
  $("accept").addEventListener("click", () => {
    if (state.picked === null) return;
    const index = state.picked;
    run(() => api(`/api/sessions/${state.sid}/accept`, { method: "POST", json: { index } }));
  });
  $("view").addEventListener("change", setView);
  $("showAdvice").addEventListener("change", () => refreshOverlays().catch(showError));
  $("showProb").addEventListener("change", () => refreshOverlays().catch(showError));
  $("download").addEventListener("click", () =>
    download(`/api/sessions/${state.sid}/mask.nii.gz`, "mask.nii.gz").catch(showError));
  $("export").addEventListener("click", async () => {
    try {
      const done = await api(`/api/sessions/${state.sid}/export`, { method: "POST", json: { name: $("exportName").value } });
      status(`Exported ${done.exported} to ${done.folder} in the server's state folder.`);
    } catch (err) { showError(err); }
  });
  document.addEventListener("keydown", (e) => {
    // shortcuts, ignored while typing in a field: modes r/f/b/e/s/x/l, undo z, redo y, advice a
    if (e.target.closest("input:not([type=radio]):not([type=checkbox]), select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const modes = { r: "roi", f: "foreground", b: "background", e: "edge", s: "scribble_fg",
      x: "scribble_bg", l: "look" };
    const radio = modes[e.key] && document.querySelector(`input[name=mode][value=${modes[e.key]}]`);
    if (radio) radio.checked = true;
    else if (e.key === "z" && !$("undo").disabled) $("undo").click();
    else if (e.key === "y" && !$("redo").disabled) $("redo").click();
    else if (e.key === "a") { $("showAdvice").checked = !$("showAdvice").checked; refreshOverlays().catch(showError); }
  });
  await loadInfo();
  state.ready = true;
}

main().catch(showError);
