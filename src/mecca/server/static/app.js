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
const MARKER_DELAY_MS = 150; // see queueClicks

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
const state = { sid: null, session: null, corner: null, busy: false, overlays: [], phases: {}, labels: [],
  queue: [], loaded: false, methods: {} };
window.mecca = state; // read by the browser tests

// window.nv: the viewer, for tests and profiling in the browser console
// three planes and a 3D render by default (the "One view" button toggles a single plane)
// a thin crosshair with a gap, so that the marker of the clicked point shows under it
const nv = window.nv = new niivue.Niivue({ backColor: [0.07, 0.07, 0.07, 1], show3Dcrosshair: true,
  multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS, crosshairWidth: 0.4, crosshairGap: 14,
  crosshairColor: [1, 0.3, 0.3, 0.8] });

// page pixels of a point in mm, the view moved through it (NiiVue's own mapping): where a
// scripted user clicks (the browser tests, benchmarks/page_new_user.py)
window.screenPointOf = (mm) => {
  nv.scene.crosshairPos = nv.mm2frac(mm);
  nv.drawScene();
  const p = nv.frac2canvasPos(nv.mm2frac(mm)), r = nv.canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  return [r.left + p[0] / dpr, r.top + p[1] / dpr];
};

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
  if (!reply.ok) {
    // the server's reason where it gives one (JSON {"error"}: a SEG of a session with no
    // step yet, a bad segment name), else the HTTP status
    let why = "";
    try { why = (await reply.json()).error || ""; } catch (e) { /* not JSON */ }
    throw new Error(why || `${path.split("?")[0]}: HTTP ${reply.status}`);
  }
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

function count(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function summary(data) {
  // what is now the case, in one line: the status after any change
  if (!data) return "No image open.";
  const pending = data.pending ? `, ${count(data.pending, "click")} queued on the server` : "";
  const roi = data.roi ? "" : ", no ROI yet";
  const mask = data.last ? `, ${data.last.mask_voxels} voxels in the mask` : ", no mask yet";
  return `${data.method}: ${count(data.steps, "step")}${pending}${roi}${mask}.`;
}

function oneClickTip(data) {
  // one foreground click, no box, a method that takes boxes (the generalist): on unseen
  // livers one click marks part of the organ, a tight box most of it (docs/defaults.md)
  const clicks = data.clicks || [];
  const one = data.steps === 1 && !data.box && (data.accepts || []).includes("box") &&
    clicks.length === 1 && clicks[0].kind === "foreground";
  return one ? " A large organ? One click often marks only part of it: " +
    "draw a tight box round it (Box tool, key o)." : "";
}

function showBusy() {
  // the busy indicator: shown while a request is in flight or clicks wait their turn
  const queued = state.queue.reduce((n, e) => n + (e.clicks ? e.clicks.length : 1), 0);
  $("busy").hidden = !state.busy && !queued && !state.loading;
  $("busy").textContent = queued ? `Working... ${queued} queued` : "Working...";
  document.body.classList.toggle("busy", Boolean(state.busy || state.loading));
}
function mode() { return document.querySelector("input[name=mode]:checked").value; }

async function loadInfo() {
  const info = await api("/api/info");
  state.legend = info.overlay_legend;
  state.proposing = Object.fromEntries(info.methods.map((m) => [m.name, m.proposes]));
  state.methods = Object.fromEntries(info.methods.map((m) => [m.name, m]));
  $("method").replaceChildren(...info.methods.map((m) => new Option(methodLine(m), m.name)));
  showMethodNote();
  $("root").replaceChildren(...info.roots.map((r) => new Option(r.name, String(r.index))));
  if (info.roots.length) await listFiles("");
}

// Models named: the picker names the model each learned method runs and what it was
// trained on; the note under it warns, before a step runs, when that model was trained
// on one dataset only (everything but the generalist).
function methodLine(m) {
  const model = m.model ? ` \u00b7 ${m.model} (${m.trained_on})` : " \u00b7 no model";
  return `${m.name}${model} \u00b7 ${m.accepts.join(", ")}`;
}

function methodNote(m) {
  if (!m) return "";
  if (!m.model) return `${m.name} is a classical method: no trained model, any image.`;
  if (m.any_target) return `${m.name} runs ${m.model}, trained on ${m.trained_on}.`;
  return `${m.name} runs ${m.model}, trained on ${m.trained_on} only: on another anatomy ` +
    "expect poor results.";
}

function showMethodNote() {
  const m = state.methods && state.methods[$("method").value];
  $("methodNote").textContent = methodNote(m);
  $("methodNote").classList.toggle("warn", Boolean(m && m.model && !m.any_target));
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
  // a DICOM series is a folder of slices the list does not name: the server says when
  // the folder shown is one, and it opens as one image
  if (listing.series) {
    items.unshift(fileItem(folder, false, "\u25B6 Open this folder (DICOM series)"));
  }
  if (folder) items.unshift(fileItem(folder.split("/").slice(0, -1).join("/"), true, ".."));
  $("files").replaceChildren(...items);
}

async function opening(what, makeSession) {
  // open an image (or a saved session): no input is taken until it is drawn; on failure
  // the status says what is open now
  const before = state.loaded;
  state.loaded = false;
  state.loading = true;
  for (const id of ["undo", "redo", "reset", "export", "downloadSeg", "newLabel", "overlap"]) $(id).disabled = true; // no session yet
  showBusy();
  showError(null);
  status(`Opening ${what}...`);
  try {
    await openSession(await makeSession());
  } catch (err) {
    state.loaded = before && Boolean(nv.back) && state.session !== null;
    if (state.loaded) update(state.session);
    showError(err);
    status(`Could not open ${what}: ${err.message || err}. ` +
      (state.loaded ? `Still on the previous image: ${summary(state.session)}` : "No image open."));
  } finally {
    state.loading = false;
    showBusy();
  }
}

async function openSession(data) {
  const imageUrl = await blobUrl(`/api/sessions/${data.id}/image.nii.gz`); // fails: nothing changed
  const rows = await api("/api/sessions").then((listing) => listing.sessions, () => null); // its labels
  state.loaded = false;
  state.sid = null;
  state.session = null;
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = imageUrl;
  await nv.loadVolumes([{ url: imageUrl, name: "image.nii.gz" }]);
  Object.assign(state, { labels: groupLabels(data, rows || []), sid: data.id, session: data,
    corner: null, overlays: [] });
  if (rows) showSessions(rows);
  prepareDrawing();
  setView();
  update(data);
  state.loaded = true;
  await refreshOverlays();
  if (!rows) listSessions().catch(showError);
  const next = data.steps ? "Click to correct it." : "Draw the ROI (2 corners) or click.";
  const warning = data.warning ? ` Warning: ${data.warning}` : "";
  const edited = state.labels.find((l) => l.sid === data.id);
  const labels = state.labels.length > 1
    ? ` Editing label ${edited.value} of ${state.labels.length} labels (the others outlined).` : "";
  status(`Opened ${data.name || "the image"} (${data.shape.join(" x ")} voxels).${warning}${labels} ` +
    `${summary(data)} ${next}`);
}

function update(data) {
  state.session = data;
  $("undo").disabled = !data.can_undo;
  $("redo").disabled = !data.can_redo;
  $("reset").disabled = data.steps === 0;
  $("export").disabled = data.steps === 0;
  $("download").hidden = data.steps === 0;
  showExportChoices(data);
  $("proposalsBox").hidden = !state.proposing[data.method];
  $("propose").disabled = !data.roi && data.steps === 0;
  clearProposals();
  const roi = data.roi ? `ROI ${data.roi[0].join(",")} - ${data.roi[1].join(",")}` : "no ROI yet";
  const runs = data.model || (state.methods[data.method] || {}).model;
  const model = runs ? ` (model ${runs})` : "";
  $("info").textContent = `${data.name || "image"}: ${data.method}${model}, ${count(data.steps, "step")}, ${roi}`;
  if ([...$("method").options].some((o) => o.value === data.method)) $("method").value = data.method;
  showMethodNote();
  const label = state.labels.find((l) => l.sid === data.id);
  if (label) Object.assign(label, labelState(data));
  renderLabels();
  const row = $("sessions").querySelector(`li[data-sid="${data.id}"]`);
  if (row) row.textContent = sessionLine(Object.assign({}, data, { changed: new Date().toISOString() }), row.dataset.label);
  for (const li of $("sessions").children) li.classList.toggle("current", li.dataset.sid === data.id);
}

// DICOM SEG (docs/dicom-seg.md): a session opened from a DICOM series under an image root
// (its state's `dicom`) can export its mask as a SEG referencing that series: a button,
// the segment's name, and a .dcm export name; any other session shows none of them (the
// server would refuse them with a 400).
const MASK_ENDINGS = ".nii.gz, .nii, .nrrd or .mha";

function showExportChoices(data) {
  $("dicomSeg").hidden = !data.dicom;
  $("downloadSeg").disabled = data.steps === 0;
  $("labelMapHint").hidden = !data.dicom;
  $("exportHint").textContent = data.dicom
    ? `Export name: ${MASK_ENDINGS} writes the mask; .dcm writes a DICOM SEG of this series (segment name below).`
    : `Export name: ${MASK_ENDINGS} (written in the server's state folder).`;
}

function segLabel(name) {
  // the segment name sent with a SEG (the server checks it: 1-64 printable characters)
  return name.endsWith(".dcm") ? $("segLabel").value : undefined;
}

async function downloadSeg() {
  const label = $("segLabel").value;
  await download(`/api/sessions/${state.sid}/seg.dcm?label=${encodeURIComponent(label)}`, "seg.dcm");
  status(`Downloaded seg.dcm: the mask as a DICOM SEG (segment "${label}") referencing the image's series. ` +
    summary(state.session));
}

// Resume: this server's saved sessions (GET /api/sessions), the last changed first; a
// click reopens one (the server replays it when it is not in memory).
function sessionLine(s, label = "") {
  const when = new Date(s.changed).toLocaleString();
  const which = label ? ` \u00b7 label ${label}` : "";
  return `${s.name || "image"} \u00b7 ${s.method} \u00b7 ${count(s.steps, "step")} \u00b7 ${when}${which}`;
}

async function listSessions() {
  showSessions((await api("/api/sessions")).sessions);
}

function showSessions(rows) {
  // a session of a label group (several labels of one image) says which label it is
  const labelOf = {};
  for (const s of rows) {
    if (s.group && rows.some((r) => r.group === s.group && r.id !== s.id) && !(s.id in labelOf)) {
      for (const l of groupLabels(s, rows)) labelOf[l.sid] = l.value;
    }
  }
  $("sessions").replaceChildren(...rows.map((s) => {
    const li = document.createElement("li");
    li.dataset.sid = s.id;
    li.dataset.label = s.id in labelOf ? String(labelOf[s.id]) : "";
    li.textContent = sessionLine(s, li.dataset.label);
    li.classList.toggle("current", s.id === state.sid);
    return li;
  }));
  $("noSessions").hidden = rows.length > 0;
}

async function resume(sid, name) {
  await opening(`the session on ${name}`, () => api(`/api/sessions/${sid}`));
  await listSessions().catch(showError);
}

// Several labels on one image: each label is its own server session (own ROI, clicks,
// method, undo); the edited one shows in full, the others as blue outlines; "Export
// label map" merges them (POST /api/labelmap). Each label has an overlap rule (PUT
// .../overlap, a setting, not an undo step): Overwrite (an overlapped voxel goes to the
// label with the highest probability there), Keep existing (it gives way to any other),
// Lock (no other label takes its voxels: the server gives them to the other labels'
// steps as background). Values are 1, 2, ... in order of creation; "New label" saves its
// value with the session (the sibling request's `label`), so that reopening any label of
// the group (after a reload or a restart) brings all its saved labels back with their
// values (groupLabels).
const RULE_WORDS = { overwrite: "overwrites", keep: "keeps existing", lock: "locked" };

function labelState(data) {
  return { method: data.method, steps: data.steps, overlap: data.overlap };
}

function groupLabels(data, rows) {
  // the labels of an opened session's group (`group` in its state and in the rows of
  // GET /api/sessions), in the order they were made (`created`), each with its saved value
  // (`label`); one without (the group's first: the page's label 1, or one made by another
  // client) or with a value taken already gets the smallest value still free
  const own = rows.find((r) => r.id === data.id) || { id: data.id, created: "~", label: null };
  const members = [...rows.filter((r) => r.group === data.group && r.id !== data.id), own]
    .sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : 0));
  const taken = new Set();
  const saved = members.map((r) => {
    if (!Number.isInteger(r.label) || taken.has(r.label)) return null;
    taken.add(r.label);
    return r.label;
  });
  let free = 1;
  return members.map((r, n) => {
    let value = saved[n];
    if (value === null) {
      while (taken.has(free)) free += 1;
      value = free;
      taken.add(free);
    }
    return { sid: r.id, value, method: r.method, steps: r.steps, overlap: r.overlap };
  });
}

function renderLabels() {
  $("labels").replaceChildren(...state.labels.map((l) => {
    const radio = Object.assign(document.createElement("input"),
      { type: "radio", name: "label", value: l.sid, checked: l.sid === state.sid });
    const label = document.createElement("label");
    const rule = RULE_WORDS[l.overlap] ? `, ${RULE_WORDS[l.overlap]}` : "";
    label.append(radio, ` label ${l.value}: ${l.method || ""}, ${count(l.steps || 0, "step")}${rule}`);
    return label;
  }));
  const edited = state.labels.find((l) => l.sid === state.sid);
  if (edited && RULE_WORDS[edited.overlap]) $("overlap").value = edited.overlap;
  $("overlap").disabled = !state.sid;
  $("newLabel").disabled = !state.sid;
  $("removeLabel").disabled = state.labels.length < 2;
  $("exportLabels").disabled = !state.labels.some((l) => l.steps > 0);
}

async function newLabel() {
  const value = Math.max(...state.labels.map((l) => l.value)) + 1;
  const data = await api(`/api/sessions/${state.sid}/sibling`, { method: "POST",
    json: { method: $("method").value, label: value } });
  state.labels.push({ sid: data.id, value });
  state.sid = data.id;
  state.corner = null;
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
  const value = state.labels.find((l) => l.sid === gone).value;
  if (!window.confirm(`Remove label ${value} and its clicks? Undo cannot bring a removed label back.`)) return state.session;
  await api(`/api/sessions/${gone}`, { method: "DELETE" });
  state.labels = state.labels.filter((l) => l.sid !== gone);
  return switchLabel(state.labels[0].sid);
}

async function setOverlap(sid, rule) {
  try {
    return await api(`/api/sessions/${sid}/overlap`, { method: "PUT", json: { rule } });
  } catch (err) {
    renderLabels(); // the select shows the rule the label still has
    throw err;
  }
}

function overlapSaid(data) {
  const label = state.labels.find((l) => l.sid === data.id);
  const name = `Label ${label ? label.value : "?"}`;
  const what = {
    lock: `${name} is locked: other labels will not take its voxels (from their next step; the label map at once).`,
    keep: `${name} keeps existing labels: in the label map it gives way wherever another label's mask is.`,
    overwrite: `${name} overwrites: in the label map a shared voxel goes to the more probable label.`,
  }[data.overlap] || `${name}: overlap rule ${data.overlap}.`;
  return `${what} ${summary(data)}`;
}

async function exportLabels() {
  const labels = state.labels.map((l) => ({ session: l.sid, value: l.value }));
  const done = await api("/api/labelmap", { method: "POST", json: { labels, name: $("labelMapName").value } });
  const seg = done.exported.endsWith(".dcm") ? ", a DICOM SEG of one segment each" : "";
  status(`Exported ${done.exported} (${labels.length} labels${seg}) to ${done.folder} in the server's state folder.`);
}

async function otherLabelLayers(overlays) {
  // the labels not being edited: their mask outlines, over the edited label's probability
  // colours but not over its mask outline or advice regions
  const outline = state.legend.find((row) => row.name === "mask outline").label;
  const layers = [];
  for (const l of state.labels) {
    if (l.sid === state.sid || !l.steps) continue;
    const reply = await request(`/api/sessions/${l.sid}/overlay?outline_only=true`);
    if (reply.status !== 200) continue;
    layers.push([new Uint8Array(await reply.arrayBuffer()), reply.headers.get("X-Mecca-Box"), outline]);
    overlays.push(`label ${l.value} outline`);
  }
  return layers;
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
  state.base = null;
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
  nv.setDrawColormap(drawColormap([...state.legend, ...INPUT_LEGEND]));
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
  // every request first, then one paint with no await in between: input markers drawn
  // while a request waits (drawInput) must not end up in the overlays kept as state.base
  const data = state.session;
  if (!nv.drawBitmap || !state.rasLut) prepareDrawing();
  ensureColormap();
  const layers = [];
  const overlays = [];
  if (data && data.last) {
    const prob = $("showProb").checked;
    const advice = $("showAdvice").checked;
    const reply = await request(`/api/sessions/${data.id}/overlay?prob=${prob}&advice=${advice}`);
    if (!reply.ok) throw new Error(`overlay: HTTP ${reply.status}`);
    const bytes = new Uint8Array(await reply.arrayBuffer());
    state.phases.overlay = performance.now();
    if (reply.status === 200) layers.push([bytes, reply.headers.get("X-Mecca-Box"), 256]);
    overlays.push(prob ? "probability" : "mask", "mask outline", ...(advice ? ["advice"] : []));
  }
  layers.push(...await otherLabelLayers(overlays));
  nv.drawBitmap.fill(0);
  for (const [bytes, box, below] of layers) paintBox(bytes, box, below);
  state.overlays = overlays;
  state.base = nv.drawBitmap.slice(); // the overlays without the input markers
  paintInput();
  state.phases.paint = performance.now();
  nv.refreshDrawing(true);
  nv.gl.finish(); // the overlay is on screen when the GL work is done, not when it is queued
}

// The user's input, drawn in the same drawing layer over the overlays (so it shows in
// every plane it crosses, as voxels of the image): the ROI box as dashed faces with solid
// edges, a first ROI corner, and each click with its own colour and shape (foreground a
// ball, background a hollow cube, edge point a 3D cross), also clicks still queued.
const INPUT_LEGEND = [
  { label: 20, rgba: [210, 210, 210, 200], name: "ROI box" },
  { label: 21, rgba: [255, 255, 255, 255], name: "ROI corner" },
  { label: 22, rgba: [0, 255, 255, 255], name: "foreground click" },
  { label: 23, rgba: [255, 0, 255, 255], name: "background click" },
  { label: 24, rgba: [255, 255, 255, 255], name: "edge click" },
];
const MARK = { roi: 20, corner: 21, foreground: 22, background: 23, edge: 24 };

function mmToVoxel(mm) {
  // RAS mm -> the nearest voxel (i, j, k) of the server's image, as the server rounds it
  const a = state.session.affine;
  const m = [0, 1, 2].map((r) => [a[r][0], a[r][1], a[r][2]]);
  const b = [0, 1, 2].map((r) => mm[r] - a[r][3]);
  const det = (q) => q[0][0] * (q[1][1] * q[2][2] - q[1][2] * q[2][1])
    - q[0][1] * (q[1][0] * q[2][2] - q[1][2] * q[2][0]) + q[0][2] * (q[1][0] * q[2][1] - q[1][1] * q[2][0]);
  const d = det(m);
  return [0, 1, 2].map((c) => {
    const q = m.map((row, r) => row.map((v, k) => (k === c ? b[r] : v)));
    return Math.floor(det(q) / d + 0.5);
  });
}

function markerVoxels(shape, [i, j, k]) {
  // the voxels of one marker round voxel (i, j, k)
  const out = [];
  const r = 2;
  for (let dk = -r; dk <= r; dk++) for (let dj = -r; dj <= r; dj++) for (let di = -r; di <= r; di++) {
    const n = Math.abs(di) + Math.abs(dj) + Math.abs(dk);
    const edge = Math.max(Math.abs(di), Math.abs(dj), Math.abs(dk));
    const axis = n === Math.abs(di) || n === Math.abs(dj) || n === Math.abs(dk); // on one axis
    const take = shape === "ball" ? di * di + dj * dj + dk * dk <= r * r
      : shape === "cube" ? edge === r
      : shape === "corner" ? edge <= 1 || axis
      : axis && n <= r + 1;
    if (take) out.push([i + di, j + dj, k + dk]);
  }
  return out;
}

function paintVoxel(ijk, label) {
  const dims = state.session.shape;
  if (ijk.some((v, a) => v < 0 || v >= dims[a])) return;
  nv.drawBitmap[state.rasLut[0][ijk[0]] + state.rasLut[1][ijk[1]] + state.rasLut[2][ijk[2]]] = label;
}

function paintRoi(roi) {
  // the box's faces dashed (every other voxel: a dashed outline in any slice through it),
  // its edges solid, its 8 corners as crosses
  const [lo, hi] = [roi[0], roi[1].map((v) => v - 1)];
  const on = (v, a) => v === lo[a] || v === hi[a];
  for (let k = lo[2]; k <= hi[2]; k++) for (let j = lo[1]; j <= hi[1]; j++) {
    const sides = on(j, 1) + on(k, 2);
    // inside the box only the two i faces are drawn
    const row = sides ? Array.from({ length: hi[0] - lo[0] + 1 }, (_, n) => lo[0] + n) : [lo[0], hi[0]];
    for (const i of row) {
      const faces = sides + on(i, 0);
      if (faces >= 2 || (faces === 1 && (i + j + k) % 2 === 0)) paintVoxel([i, j, k], MARK.roi);
    }
  }
  for (const i of [lo[0], hi[0]]) for (const j of [lo[1], hi[1]]) for (const k of [lo[2], hi[2]]) {
    for (const v of markerVoxels("corner", [i, j, k])) paintVoxel(v, MARK.corner);
  }
}

const SHAPES = { foreground: "ball", background: "cube", edge: "cross" };

function inputClicks() {
  // every click to draw: the server's (steps and queued there), those in flight, those queued here
  const data = state.session;
  const local = [...(state.sending || []), ...state.queue.filter((e) => e.clicks && e.sid === state.sid).flatMap((e) => e.clicks)];
  return [...(data.clicks || []), ...local.map((c) => ({ kind: c.kind, ijk: mmToVoxel(c.xyz_mm) }))];
}

function paintInput() {
  if (!state.session || !state.rasLut) return;
  // the user's box when one was drawn (the ROI around it is where clicks may go), else the ROI
  const box = state.session.box || state.session.roi;
  if (box) paintRoi(box);
  if (state.corner) for (const v of markerVoxels("corner", mmToVoxel(state.corner))) paintVoxel(v, MARK.corner);
  for (const c of inputClicks()) {
    const label = MARK[c.kind];
    if (label) for (const v of markerVoxels(SHAPES[c.kind], c.ijk)) paintVoxel(v, label);
  }
}

function drawInput() {
  // redraw the input markers over the last overlays (no request)
  if (!state.loaded || !nv.drawBitmap) return;
  ensureColormap();
  if (state.base && state.base.length === nv.drawBitmap.length) nv.drawBitmap.set(state.base);
  else nv.drawBitmap.fill(0);
  paintInput();
  nv.refreshDrawing(true);
}

// Every change goes through one queue, so nothing done while a step runs is lost: clicks
// given meanwhile go together as the next step (one request), other actions (buttons,
// keys, the ROI) run after them in the order given. `say` gives the status line after it.
function run(action, t0, say) {
  return new Promise((resolve) => {
    state.queue.push({ action, t0, say, resolve });
    showBusy();
    pump();
  });
}

function queueClicks(clicks, t0) {
  // clicks for the edited session; consecutive ones are sent as one batched step
  return new Promise((resolve) => {
    state.queue.push({ clicks, sid: state.sid, t0, resolve });
    showBusy();
    const idle = !state.busy;
    pump(); // the request leaves first (fetch is called before pump's first await)
    // A click sent at once gets its marker with the step's overlay (one redraw, not two:
    // in software WebGL a redraw holds the page for tens of ms, and the reply waits
    // behind it), or after MARKER_DELAY_MS if the step is slower; a click queued behind a
    // running step is drawn now, so the user sees it was taken.
    if (!idle) drawInput();
    else setTimeout(() => { if (state.sending.some((c) => clicks.includes(c))) drawInput(); }, MARKER_DELAY_MS);
  });
}

function nextEntry() {
  const entry = state.queue.shift();
  if (!entry.clicks) return entry;
  const clicks = [...entry.clicks];
  const done = [entry.resolve];
  while (state.queue.length && state.queue[0].clicks && state.queue[0].sid === entry.sid) {
    const more = state.queue.shift();
    clicks.push(...more.clicks);
    done.push(more.resolve);
  }
  const action = () => api(`/api/sessions/${entry.sid}/clicks`, { method: "POST", json: { clicks, step: true } });
  const batch = clicks.length > 1 ? ` (${clicks.length} clicks in one step)` : "";
  const say = (data) => `step ${data.steps}${batch}: ${summary(data)}`;
  return { action, t0: entry.t0, say, resolve: () => done.forEach((r) => r()), sent: clicks };
}

async function pump() {
  if (state.busy) return;
  state.busy = true;
  try {
    while (state.queue.length) {
      const entry = nextEntry();
      state.sending = entry.sent || [];
      showBusy();
      await execute(entry);
      state.sending = [];
      entry.resolve();
    }
  } finally {
    state.busy = false;
    showBusy();
  }
}

async function execute({ action, t0, say }) {
  showError(null);
  try {
    const data = await action();
    state.phases = { request: performance.now() };
    if (data.id !== state.sid) { // clicks queued for a label that is no longer the edited one
      const label = state.labels.find((l) => l.sid === data.id);
      if (label) Object.assign(label, labelState(data));
      renderLabels();
      await refreshOverlays(); // its outline
      status(`Label ${label ? label.value : "?"} got its queued clicks: ${summary(data)}`);
      return;
    }
    update(data);
    await refreshOverlays();
    let line = (say ? say(data) : summary(data)) + oneClickTip(data);
    if (t0 !== undefined && data.last) {
      const end = performance.now();
      const ms = end - t0;
      const p = state.phases;
      state.lastLatencyMs = ms;
      // where the time went: server request, overlay fetch, painting the box, GL upload + draw
      state.lastPhasesMs = { request: p.request - t0, overlay: (p.overlay || p.request) - p.request,
        paint: p.paint - (p.overlay || p.request), draw: end - p.paint };
      line += ` Click-to-overlay ${ms.toFixed(0)} ms (server step ${data.last.total_ms.toFixed(0)} ms, ` +
        `method ${data.last.method_ms.toFixed(0)} ms).`;
    }
    status(line);
  } catch (err) {
    showError(err);
    status(`Not done: ${err.message || err}. ${summary(state.session)}`);
    drawInput();
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
  state.base = nv.drawBitmap.slice();
  paintInput(); // the ROI and the clicks stay drawn over the preview
  nv.refreshDrawing(true);
  state.picked = index;
  state.overlays = ["proposal " + (index + 1)];
  for (const img of $("proposals").querySelectorAll("img")) img.classList.toggle("picked", Number(img.dataset.index) === index);
  $("accept").disabled = false;
}

function setView() {
  const types = { multiplanar: nv.sliceTypeMultiplanar, axial: nv.sliceTypeAxial,
    coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal };
  const view = $("view").value;
  if (view !== "multiplanar") state.singleView = view;
  $("toggleView").textContent = view === "multiplanar" ? `One view (${state.singleView || "axial"})` : "3 planes + 3D";
  nv.setSliceType(types[view]);
}

function toggleView() {
  // three planes and 3D <-> the last single plane chosen
  $("view").value = $("view").value === "multiplanar" ? state.singleView || "axial" : "multiplanar";
  setView();
}

function clickMM(event) {
  // world mm of the clicked canvas position (null outside every slice tile)
  const dpr = nv.uiData.dpr || 1;
  const frac = nv.canvasPos2frac([event.offsetX * dpr, event.offsetY * dpr]);
  if (!frac || frac[0] < 0) return null;
  return Array.from(nv.frac2mm(frac, 0, true)).slice(0, 3);
}

function refusedClick(kind, mm) {
  // why the server would refuse this click (so that a batch is not refused for it), or null
  const data = state.session;
  if (!data.accepts.includes(kind)) return `${data.method} takes no ${kind} clicks (it takes ${data.accepts.join(", ")})`;
  const ijk = mmToVoxel(mm);
  if (ijk.some((v, a) => v < 0 || v >= data.shape[a])) return "the click is outside the image";
  const outside = data.roi && ijk.some((v, a) => v < data.roi[0][a] || v >= data.roi[1][a]);
  if (outside && !data.roi_follows_clicks) return "the click is outside the ROI box"; // else it grows
  return null;
}

function onCanvasClick(mm, t0) {
  if (!state.sid || !state.loaded || mode() === "look" || mm === null) return;
  if (mode() === "roi" || mode() === "box") {
    // two corners: an ROI (where to work), or the user's box around the object, which a
    // method that takes boxes (the generalist) gets as a box prompt and segments at once
    const asBox = mode() === "box";
    const what = asBox ? "box" : "ROI";
    if (!state.corner) {
      state.corner = mm;
      drawInput();
      status(`First ${what} corner set; click the opposite corner.`);
      return;
    }
    const corners = [state.corner, mm];
    state.corner = null;
    const had = state.session.steps;
    const undo = had ? ` (${count(had, "earlier step")}: Undo brings them back)` : "";
    const said = (data) => !asBox ? `ROI set${undo}. Now click (choose a click mode).`
      : data.accepts.includes("box") ? `Box set${undo}: ${data.method} segmented the object in it. Correct it with foreground/background clicks.`
        : `Box set${undo}: ${data.method} takes no box prompt, it segments in the box and a quarter of its size around it. Now click (choose a click mode).`;
    run(() => api(`/api/sessions/${state.sid}/roi`, { method: "PUT", json: { corners_mm: corners, as_box: asBox } }), undefined,
      (data) => `${said(data)} ${summary(data)}`);
    return;
  }
  if (mode() === "remove") return removeClickAt(mm);
  const kind = mode();
  const why = refusedClick(kind, mm);
  if (why) {
    status(`Click not sent: ${why}. ${summary(state.session)}`);
    return;
  }
  queueClicks([{ kind, xyz_mm: mm }], t0);
}

function removeClickAt(mm) {
  // "Remove click" mode: the click whose marker is under the pointer (within its 2-voxel
  // radius) goes; the server replays the others, and undo puts it back
  const at = mmToVoxel(mm);
  let best = null;
  state.session.clicks.forEach((c, index) => {
    const d = Math.hypot(...c.ijk.map((v, a) => v - at[a]));
    if (d <= 2.5 && (!best || d < best.d)) best = { d, index, click: c };
  });
  if (!best) {
    status(`No click marker there (switch the mode to add clicks). ${summary(state.session)}`);
    return;
  }
  const { index, click } = best;
  run(() => api(`/api/sessions/${state.sid}/clicks/remove`, { method: "POST", json: { index } }), undefined,
    (data) => `Removed the ${click.kind} click at voxel ${click.ijk.join(", ")}` +
      `${data.can_undo ? " (Undo puts it back)" : ""}. ${summary(data)}`);
}

const MAX_STROKE_POINTS = 400;

function sendStroke(points, t0) {
  // a scribble: its points (>= 0.5 mm apart) as fg or bg clicks, one refinement step
  if (!state.sid || !state.loaded || !points.length) return;
  const kind = mode() === "scribble_bg" ? "background" : "foreground";
  const every = Math.ceil(points.length / MAX_STROKE_POINTS);
  const kept = points.filter((_, n) => n % every === 0).filter((mm) => !refusedClick(kind, mm));
  if (!kept.length) {
    status(`Scribble not sent: ${refusedClick(kind, points[0])}. ${summary(state.session)}`);
    return;
  }
  queueClicks(kept.map((mm) => ({ kind, xyz_mm: mm })), t0);
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
      sendStroke(points, performance.now());
      return;
    }
    if (!down || e.button !== 0) return;
    const moved = Math.hypot(e.clientX - down[0], e.clientY - down[1]);
    down = null;
    if (moved > 4) return; // a drag, not a click
    const t0 = performance.now();
    const mm = clickMM(e);
    if (mode() !== "look" && mm) nv.scene.crosshairPos = nv.mm2frac(mm); // drawn with the next redraw
    onCanvasClick(mm, t0);
  });
}

function keepClicksFromNiivue() {
  // In the click modes a left click is the page's alone: NiiVue would move its crosshair
  // and redraw at once, a whole frame that in software WebGL holds the page's main thread
  // for ~200 ms, so the step's reply would wait behind it. The page moves the crosshair
  // itself (wireCanvas) and the next redraw (the marker or the overlay) shows it. In
  // "look" mode NiiVue gets every click.
  for (const type of ["mousedown", "mouseup", "dblclick"]) {
    $("main").addEventListener(type, (e) => {
      if (e.button === 0 && e.target === $("gl") && mode() !== "look") e.stopPropagation();
    }, { capture: true });
  }
}

function blockUntilLoaded() {
  // no input reaches the viewer before its image is drawn (NiiVue's own handlers fail
  // on a half-loaded volume): stopped on the way down, before the canvas sees it
  for (const type of ["pointerdown", "pointerup", "mousedown", "mouseup", "click", "dblclick",
    "wheel", "touchstart", "touchend", "contextmenu"]) {
    $("main").addEventListener(type, (e) => {
      if (state.loaded) return;
      e.stopPropagation();
      e.preventDefault();
    }, { capture: true, passive: false });
  }
}

async function main() {
  blockUntilLoaded();
  keepClicksFromNiivue();
  await nv.attachTo("gl");
  wireCanvas();
  $("files").addEventListener("click", async (e) => {
    const li = e.target.closest("li");
    if (!li) return;
    try {
      if (li.dataset.folder === "true") return await listFiles(li.dataset.path);
    } catch (err) { return showError(err); }
    await opening(li.dataset.path, () => api("/api/sessions", { method: "POST",
      json: { root: Number($("root").value), path: li.dataset.path, method: $("method").value } }));
  });
  $("root").addEventListener("change", () => listFiles("").catch(showError));
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (!file) return;
    const url = `/api/sessions/upload?filename=${encodeURIComponent(file.name)}&method=${$("method").value}`;
    // the server takes uploads only as octet-stream (or gzip/zip), never text/plain
    const headers = { "Content-Type": "application/octet-stream" };
    await opening(`the upload ${file.name}`, () => api(url, { method: "POST", body: file, headers }));
  });
  $("method").addEventListener("change", () => {
    showMethodNote();
    if (!state.sid || !state.session) return;
    const name = $("method").value;
    const was = state.session;
    if (was.steps && !was.can_undo_replace && !window.confirm(`Switch to ${name}? This label's ` +
        "accepted proposal cannot be rerun by another method, and undo cannot bring it back.")) {
      $("method").value = was.method;
      return;
    }
    let before = null;
    run(() => {
      before = state.session;
      return api(`/api/sessions/${state.sid}/method`, { method: "PUT", json: { method: name } });
    }, undefined, (data) => {
      const left = before.clicks.length - data.clicks.length;
      const kept = data.clicks.length ? `${count(data.clicks.length, "click")} rerun as one step` : "no clicks to rerun";
      const out = left ? `; ${count(left, "click")} it does not take left out` : "";
      const undo = data.can_undo ? ` (Undo: back to ${before.method})` : "";
      const m = state.methods[data.method];
      const warn = m && m.model && !m.any_target ? ` ${methodNote(m)}` : "";
      return `Method ${data.method}: ${kept}${out}${undo}.${warn} ${summary(data)}`;
    });
  });
  const said = {
    undo: (data, was) => data.method !== was.method || data.steps > was.steps
      ? `Undone: back to ${data.method} with ${count(data.steps, "step")}. ${summary(data)}`
      : `Undone step ${was.steps}. ${summary(data)}`,
    redo: (data, was) => `Redone${data.method !== was.method ? ` (${data.method})` : ""}. ${summary(data)}`,
    reset: (data, was) => `Reset: no clicks${data.roi ? ", the ROI stays" : ""}` +
      `${data.can_undo && was.steps ? `; Undo brings ${count(was.steps, "step")} back` : ""}. ${summary(data)}`,
  };
  for (const name of ["undo", "redo", "reset"]) {
    $(name).addEventListener("click", () => {
      if (name === "reset" && !state.session.can_undo_replace && state.session.steps && !window.confirm(
        "Reset this label? It holds an accepted proposal, so undo cannot bring its steps back.")) return;
      let was = null;
      run(() => {
        was = state.session;
        return api(`/api/sessions/${state.sid}/${name}`, { method: "POST" });
      }, undefined, (data) => said[name](data, was));
    });
  }
  $("toggleView").addEventListener("click", toggleView);
  $("sessions").addEventListener("click", (e) => {
    const li = e.target.closest("li");
    if (li && li.dataset.sid !== state.sid) resume(li.dataset.sid, li.textContent.split(" \u00b7 ")[0]);
  });
  $("refreshSessions").addEventListener("click", () => listSessions().catch(showError));
  $("propose").addEventListener("click", () => propose().catch(showError));
  const editing = (data) => {
    const label = state.labels.find((l) => l.sid === data.id);
    return `Editing label ${label ? label.value : "?"}: ${summary(data)}`;
  };
  $("newLabel").addEventListener("click", () => run(newLabel, undefined,
    (data) => `${editing(data)} Draw its ROI (2 corners) or click.`));
  $("removeLabel").addEventListener("click", () => run(removeLabel, undefined, editing));
  $("labels").addEventListener("change", (e) => run(() => switchLabel(e.target.value), undefined, editing));
  $("overlap").addEventListener("change", () => {
    const sid = state.sid;
    const rule = $("overlap").value;
    run(() => setOverlap(sid, rule), undefined, overlapSaid);
  });
  $("exportLabels").addEventListener("click", () => exportLabels().catch((err) => {
    showError(err);
    status(`Label map not exported: ${err.message || err}. ${summary(state.session)}`);
  }));
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
  $("downloadSeg").addEventListener("click", () => downloadSeg().catch((err) => {
    showError(err);
    status(`DICOM SEG not downloaded: ${err.message || err}. ${summary(state.session)}`);
  }));
  $("export").addEventListener("click", async () => {
    const name = $("exportName").value;
    const label = segLabel(name);
    try {
      const done = await api(`/api/sessions/${state.sid}/export`, { method: "POST", json: { name, label } });
      const seg = label === undefined ? "" : ` (DICOM SEG, segment "${label}")`;
      status(`Exported ${done.exported}${seg} to ${done.folder} in the server's state folder.`);
    } catch (err) {
      showError(err);
      status(`Not exported: ${err.message || err}. ${summary(state.session)}`);
    }
  });
  document.addEventListener("keydown", (e) => {
    // shortcuts, ignored while typing in a field: modes r/o/f/b/e/s/x/d/l, undo z, redo y, advice a
    if (e.target.closest("input:not([type=radio]):not([type=checkbox]), select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const modes = { r: "roi", o: "box", f: "foreground", b: "background", e: "edge", s: "scribble_fg",
      x: "scribble_bg", d: "remove", l: "look" };
    const radio = modes[e.key] && document.querySelector(`input[name=mode][value=${modes[e.key]}]`);
    if (radio) radio.checked = true;
    else if (e.key === "z" && !$("undo").disabled) $("undo").click();
    else if (e.key === "y" && !$("redo").disabled) $("redo").click();
    else if (e.key === "a") { $("showAdvice").checked = !$("showAdvice").checked; refreshOverlays().catch(showError); }
  });
  setView();
  await loadInfo();
  await listSessions().catch(showError); // the page works without the list
  state.ready = true;
}

main().catch(showError);
