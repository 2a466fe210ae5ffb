// alqa web worklist: plain JavaScript, no framework, no CDN. Talks to the same server as 3D Slicer.
// The session (login, logout, expiry), the queue with leases and verdicts, grading, confirming, uploads and the keys;
// the case opened in the viewer/editor is case.js (over viewer.js and editor.js).
"use strict";

const state = {
  token: sessionStorage.getItem("alqa_token"), auth: true, who: "", items: [], selected: -1, round: -1, labels: [],
  viewer: null, editor: null, opened: null, readOnly: false, volumes: new Map(), expiryTimer: null, pollTimer: null,
  cspViolations: [],
};
const $ = (id) => document.getElementById(id);
const VOLUME_CACHE_BYTES = 768 * 2 ** 20; // cases opened this session, kept in memory only (never on disk)

document.addEventListener("securitypolicyviolation", (e) => state.cspViolations.push(`${e.violatedDirective}: ${e.blockedURI}`));

function say(text, ok = true) {
  const m = $("message");
  m.textContent = text;
  m.className = "message " + (ok ? "ok" : "bad");
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({ cache: "no-store" }, options, { headers }));
  if (response.status === 401 && state.auth) {
    expire("Your session ended (expired, logged out or revoked): log in again.");
    throw new Error("not logged in");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    error.status = response.status;
    throw error;
  }
  return response;
}

// ---------------------------------------------------------------- session

function tokenExpiry(token) {
  const parts = (token || "").split(".");
  return parts.length === 4 ? Number(parts[2]) * 1000 : NaN;
}

function scheduleExpiry() {
  clearTimeout(state.expiryTimer);
  const at = tokenExpiry(state.token);
  if (!Number.isFinite(at)) return;
  state.expiryTimer = setTimeout(() => expire("Your session expired: log in again."), Math.max(0, at - Date.now()));
}

// Everything patient-related leaves the page: the viewer and its GPU copies, cached volumes, the queue, verdicts, ids.
function clearPatientData() {
  clearInterval(state.pollTimer);
  clearTimeout(state.expiryTimer);
  if (state.viewer) state.viewer.close();
  state.viewer = null;
  state.editor = null;
  state.opened = null;
  state.volumes.clear();
  state.items = [];
  state.selected = -1;
  AlqaViewer.freshCanvas($("viewer-canvas"));
  for (const id of ["queue", "submissions"]) $(id).querySelector("tbody").replaceChildren();
  for (const id of ["case-organs", "case-state", "region-info", "edit-state", "message", "queue-round", "who"]) $(id).textContent = "";
  $("legend").replaceChildren();
  $("case-title").textContent = "no case selected";
  $("viewer").hidden = true;
  $("slicer-link").hidden = true;
  $("slicer-link").href = "#";
  $("upload-form").reset();
  $("upload-emptied").replaceChildren();
}

function expire(reason) {
  sessionStorage.removeItem("alqa_token");
  state.token = null;
  clearPatientData();
  showLogin(reason);
}

function showLogin(error = "") {
  $("login").hidden = false;
  $("app").hidden = true;
  $("logout-button").hidden = true;
  $("login-error").textContent = error;
  $("campaign-status").textContent = "not logged in";
}

async function login(event) {
  event.preventDefault();
  const body = new URLSearchParams({ username: $("login-name").value.trim(), password: $("login-token").value.trim(), grant_type: "password" });
  const response = await fetch("/auth/token", { method: "POST", body, cache: "no-store" });
  if (!response.ok) {
    $("login-error").textContent = "Login refused: check your name and token.";
    return;
  }
  state.token = (await response.json()).access_token;
  sessionStorage.setItem("alqa_token", state.token);
  $("login-token").value = "";
  await start();
}

async function logout() {
  try { await api("/auth/logout", { method: "POST" }); } catch (e) { /* ending anyway */ }
  expire("Logged out.");
}

// ---------------------------------------------------------------- queue, verdicts, status

function renderStatus(s) {
  const el = $("campaign-status");
  if (s.round < 0) {
    el.textContent = `${s.campaign}: no round started yet`;
  } else {
    const conv = s.converged ? `CONVERGED: ${s.reason}` : (s.decision ? `not converged: ${s.decision}` : s.reason);
    el.textContent = `${s.campaign} · round ${s.round}: ${s.state} · answered ${s.answered}/${s.queued}, pending ${s.pending} · ${conv}`;
  }
  el.classList.toggle("converged", !!s.converged);
  state.who = s.annotator;
  $("who").textContent = s.auth ? `logged in as ${s.annotator}` : `${s.annotator} (no login: local server)`;
  $("logout-button").hidden = !s.auth;
}

function verdictText(v) {
  if (!v) return "";
  const why = v.reasons.length ? v.reasons.join("; ") : v.flags.join("; ");
  return why ? `${v.state}: ${why}` : v.state;
}

function cell(tr, text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  tr.appendChild(td);
  return td;
}

function renderQueue(work) {
  state.items = work.items;
  state.round = work.round;
  $("queue-round").textContent = work.round >= 0 ? `round ${work.round} (${work.state})` : "";
  const body = $("queue").querySelector("tbody");
  body.replaceChildren();
  work.items.forEach((item, i) => {
    const tr = document.createElement("tr");
    tr.dataset.case = item.case_id;
    tr.classList.toggle("answered", item.answered);
    tr.classList.toggle("next", item.next);
    tr.classList.toggle("refused", item.refused && item.open);
    cell(tr, item.position);
    cell(tr, item.case_id);
    cell(tr, item.organs.join(", "));
    cell(tr, item.score === null ? "" : item.score.toFixed(3));
    cell(tr, item.status, "status");
    cell(tr, verdictText(item.verdict), "verdict" + (item.verdict ? " v-" + item.verdict.state.replace(/ /g, "-") : ""));
    cell(tr, item.grade === null ? "" : `${item.grade} ${item.grade_name}`, "grade" + (item.grade === null ? "" : ` grade-${item.grade}`));
    tr.addEventListener("click", () => select(i));
    tr.addEventListener("dblclick", () => openCase());
    body.appendChild(tr);
  });
  if (!work.items.length) $("case-title").textContent = work.serving ? "the queue is empty" : "nothing to annotate right now";
}

function renderSubmissions(list) {
  const body = $("submissions").querySelector("tbody");
  body.replaceChildren();
  for (const s of list.slice(0, 50)) {
    const tr = document.createElement("tr");
    tr.dataset.entry = s.entry;
    cell(tr, (s.submitted_at || "").replace("T", " ").slice(0, 19));
    cell(tr, s.case_id);
    cell(tr, s.kind);
    cell(tr, s.state, "v-" + s.state.replace(/ /g, "-"));
    cell(tr, (s.reasons.length ? s.reasons : s.flags).join("; "));
    body.appendChild(tr);
  }
}

function current() {
  return state.selected >= 0 ? state.items[state.selected] : null;
}

function renderCase() {
  const item = current();
  if (!item) return;
  $("case-title").textContent = `${item.position}. ${item.case_id} (package ${item.package_id})`;
  $("case-organs").textContent = item.organs.length ? `Organs to fix, in this order: ${item.organs.join(", ")}` : "No organ flagged.";
  const verdict = item.verdict ? ` · your last answer: ${verdictText(item.verdict)}` : "";
  $("case-state").textContent = `${item.status}${verdict}`;
  $("case-state").className = "state" + (item.refused && item.open ? " bad" : "");
  $("open-button").disabled = !item.package_id;
  $("release-button").hidden = item.lease.state !== "yours";
}

function select(i) {
  if (i < 0 || i >= state.items.length) return;
  state.selected = i;
  document.querySelectorAll("#queue tbody tr").forEach((tr, k) => tr.classList.toggle("selected", k === i));
  renderCase();
}

async function refresh() {
  const [status, work, subs] = await Promise.all(["/alqa/status", "/alqa/worklist", "/alqa/submissions"].map((p) => api(p).then((r) => r.json())));
  renderStatus(status);
  const keep = current() ? current().case_id : null;
  renderQueue(work);
  renderSubmissions(subs.submissions);
  let i = work.items.findIndex((it) => it.case_id === keep);
  if (i < 0) i = work.items.findIndex((it) => it.next);
  if (i < 0 && work.items.length) i = 0;
  if (i >= 0) select(i);
}

// every 10 s: the sensor's verdicts, and the lease on the case being edited renewed before it runs out
async function poll() {
  const item = state.items.find((it) => it.case_id === state.opened);
  if (item && !state.readOnly && item.lease.state === "yours" && Date.parse(item.lease.until) - Date.now() < 15 * 60 * 1000) {
    await api(`/alqa/cases/${encodeURIComponent(item.case_id)}/lease`, { method: "POST" });
  }
  await refresh();
}

// ---------------------------------------------------------------- grading, confirming, uploading

async function grade(value) {
  const item = current();
  if (!item) return;
  try {
    const r = await (await api(`/alqa/cases/${encodeURIComponent(item.case_id)}/grade`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ grade: value, round: state.round }),
    })).json();
    say(`graded ${r.case_id}: ${r.grade} ${r.grade_name} (round ${r.round})`);
    await refresh();
  } catch (e) {
    say(`grade: ${e.message}`, false);
  }
}

async function confirmCase() {
  const item = current();
  if (!item) return;
  try {
    const r = await (await api(`/alqa/cases/${encodeURIComponent(item.case_id)}/confirm`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ package: item.package_id }),
    })).json();
    say(`confirmed ${r.case_id} (package ${r.package_id}); the submissions sensor takes it on its next tick`);
    await refresh();
  } catch (e) {
    say(`confirm: ${e.message}`, false);
  }
}

async function downloadPackage() {
  const item = current();
  if (!item) return;
  try {
    const blob = await (await api(`/alqa/cases/${encodeURIComponent(item.case_id)}/${encodeURIComponent(item.package_id)}/package.zip`)).blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${item.case_id}_${item.package_id}.zip`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    say(`downloaded ${a.download}`);
  } catch (e) {
    say(`download: ${e.message}`, false);
  }
}

async function upload(event) {
  event.preventDefault();
  const item = current();
  const file = $("upload-file").files[0];
  if (!item || !file) return;
  const emptied = Array.from($("upload-emptied").selectedOptions).map((o) => o.value);
  const form = new FormData();
  form.append("params", JSON.stringify({ model: "alqa web worklist", emptied_organs: emptied }));
  form.append("label", file, file.name);
  try {
    const r = await (await api(`/datastore/label?image=${encodeURIComponent(item.image_id)}`, { method: "PUT", body: form })).json();
    say(r.message);
    $("upload-form").reset();
    await refresh();
  } catch (e) {
    say(`upload: ${e.message}`, false);
  }
}

// ---------------------------------------------------------------- keys and start

function onKey(event) {
  const tag = (event.target && event.target.tagName) || "";
  if (["INPUT", "SELECT", "TEXTAREA"].includes(tag) || $("app").hidden) return;
  const v = state.viewer && state.viewer.nv ? state.viewer : null;
  const e = state.editor;
  const key = event.key;
  const ctrl = event.ctrlKey || event.metaKey;
  const act = (f) => { event.preventDefault(); Promise.resolve(f()).then(syncToolbar).catch((err) => say(err.message, false)); };
  if (ctrl && key.toLowerCase() === "s") return act(saveLabel);
  if (ctrl && key.toLowerCase() === "z" && !event.shiftKey) return act(() => e && e.undo());
  if (ctrl && (key.toLowerCase() === "y" || (key.toLowerCase() === "z" && event.shiftKey))) return act(() => e && e.redo());
  if (ctrl || event.altKey) return;
  if (tag === "BUTTON" && key === "Enter") return;
  if (["0", "1", "2"].includes(key)) return act(() => grade(Number(key)));
  if (key === "ArrowDown" || key === "j") return act(() => select(Math.min(state.selected + 1, state.items.length - 1)));
  if (key === "ArrowUp" || key === "k") return act(() => select(Math.max(state.selected - 1, 0)));
  if (key === "Enter") return act(openCase);
  if (key === "r") return act(refresh);
  if (!v) return;
  if (key === "n" || key === "p" || key === "N") return act(() => showRegion(v.jump(key === "n" ? 1 : -1)));
  if (key === "a") return act(() => v.cycleAttention());
  if (key === "v") return act(() => v.cycleView());
  if (key === "w") return act(() => v.cyclePreset());
  if (!e || state.readOnly) return;
  const tools = { Escape: "navigate", d: "paint", e: "erase", f: "fill" };
  if (tools[key]) return act(() => e.setTool(tools[key]));
  if (key === "[" || key === "]") return act(() => e.setBrush(e.brush + (key === "]" ? 1 : -1)));
  if (key === "," || key === ".") {
    const values = e.organs.map((o) => o.value);
    const i = values.indexOf(e.organ);
    return act(() => e.setOrgan(values[(i + (key === "." ? 1 : values.length - 1)) % values.length]));
  }
}

function wire() {
  $("login-form").addEventListener("submit", login);
  $("logout-button").addEventListener("click", logout);
  $("refresh-button").addEventListener("click", () => refresh().catch((e) => say(e.message, false)));
  $("open-button").addEventListener("click", () => openCase().catch((e) => say(e.message, false)));
  $("release-button").addEventListener("click", releaseCase);
  $("confirm-button").addEventListener("click", confirmCase);
  $("download-button").addEventListener("click", downloadPackage);
  $("upload-form").addEventListener("submit", upload);
  wireCase();
  document.addEventListener("keydown", onKey);
}

async function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  scheduleExpiry();
  try {
    const info = await (await api("/info/")).json();
    const select = $("upload-emptied");
    select.replaceChildren();
    info.labels.forEach((name) => {
      const o = document.createElement("option");
      o.value = name;
      o.textContent = name;
      select.appendChild(o);
    });
    await refresh();
    clearInterval(state.pollTimer);
    state.pollTimer = setInterval(() => poll().catch(() => {}), 10000); // verdicts arrive with the sensor's ticks
  } catch (e) {
    if (e.message !== "not logged in") say(e.message, false);
  }
}

async function boot() {
  wire();
  const auth = await (await fetch("/auth/", { cache: "no-store" })).json();
  state.auth = !!auth.enabled;
  if (state.auth && !state.token) {
    showLogin();
    return;
  }
  await start();
}

window.alqa = state; // for the browser tests and a curious reader of the console
document.addEventListener("DOMContentLoaded", boot); // after case.js, which the page loads next
