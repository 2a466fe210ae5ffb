// alqa web worklist: plain JavaScript, no framework, no CDN. Talks to the same server as 3D Slicer.
"use strict";

const state = { token: sessionStorage.getItem("alqa_token"), auth: true, items: [], selected: -1, round: -1, previewUrl: null };
const $ = (id) => document.getElementById(id);

function say(text, ok = true) {
  const m = $("message");
  m.textContent = text;
  m.className = "message " + (ok ? "ok" : "bad");
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401 && state.auth) {
    sessionStorage.removeItem("alqa_token");
    state.token = null;
    showLogin("Please log in (your session ended or the token is not valid).");
    throw new Error("not logged in");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response;
}

function showLogin(error = "") {
  $("login").hidden = false;
  $("app").hidden = true;
  $("login-error").textContent = error;
  $("campaign-status").textContent = "not logged in";
  $("who").textContent = "";
}

async function login(event) {
  event.preventDefault();
  const body = new URLSearchParams({ username: $("login-name").value.trim(), password: $("login-token").value.trim(), grant_type: "password" });
  const response = await fetch("/auth/token", { method: "POST", body });
  if (!response.ok) {
    $("login-error").textContent = "Login refused: check your name and token.";
    return;
  }
  state.token = (await response.json()).access_token;
  sessionStorage.setItem("alqa_token", state.token);
  $("login-token").value = "";
  await start();
}

function renderStatus(s) {
  const el = $("campaign-status");
  if (s.round < 0) {
    el.textContent = `${s.campaign}: no round started yet`;
  } else {
    const conv = s.converged ? `CONVERGED: ${s.reason}` : (s.decision ? `not converged: ${s.decision}` : s.reason);
    el.textContent = `${s.campaign} · round ${s.round}: ${s.state} · answered ${s.answered}/${s.queued}, pending ${s.pending} · ${conv}`;
  }
  el.classList.toggle("converged", !!s.converged);
  $("who").textContent = s.auth ? `logged in as ${s.annotator}` : `${s.annotator} (no login: local server)`;
}

function renderQueue(work) {
  state.items = work.items;
  state.round = work.round;
  $("queue-round").textContent = work.round >= 0 ? `round ${work.round} (${work.state})` : "";
  const body = $("queue").querySelector("tbody");
  body.innerHTML = "";
  work.items.forEach((item, i) => {
    const tr = document.createElement("tr");
    tr.dataset.case = item.case_id;
    tr.classList.toggle("answered", item.status === "answered");
    tr.classList.toggle("next", item.next);
    const cells = [item.position, item.case_id, item.organs.join(", "), item.score === null ? "" : item.score.toFixed(3), item.status,
      item.grade === null ? "" : `${item.grade} ${item.grade_name}`];
    cells.forEach((text, k) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (k === 5) {
        td.className = "grade" + (item.grade === null ? "" : ` grade-${item.grade}`);
      }
      tr.appendChild(td);
    });
    tr.addEventListener("click", () => select(i));
    body.appendChild(tr);
  });
  if (!work.items.length) {
    $("case-title").textContent = work.serving ? "the queue is empty" : "nothing to annotate right now";
  }
}

async function select(i) {
  if (i < 0 || i >= state.items.length) return;
  state.selected = i;
  document.querySelectorAll("#queue tbody tr").forEach((tr, k) => tr.classList.toggle("selected", k === i));
  const item = state.items[i];
  $("case-title").textContent = `${item.position}. ${item.case_id} (package ${item.package_id})`;
  $("case-organs").textContent = item.organs.length ? `Organs to fix, in this order: ${item.organs.join(", ")}` : "No organ flagged.";
  if (!item.package_id) return;
  try {
    const blob = await (await api(`/alqa/cases/${encodeURIComponent(item.case_id)}/${encodeURIComponent(item.package_id)}/preview.png`)).blob();
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(blob);
    $("case-preview").src = state.previewUrl;
  } catch (e) {
    say(`preview: ${e.message}`, false);
  }
}

function current() {
  return state.selected >= 0 ? state.items[state.selected] : null;
}

async function refresh() {
  const [status, work] = await Promise.all([api("/alqa/status").then((r) => r.json()), api("/alqa/worklist").then((r) => r.json())]);
  renderStatus(status);
  const keep = current() ? current().case_id : null;
  renderQueue(work);
  let i = work.items.findIndex((it) => it.case_id === keep);
  if (i < 0) i = work.items.findIndex((it) => it.next);
  if (i < 0 && work.items.length) i = 0;
  if (i >= 0) await select(i);
}

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

function onKey(event) {
  const tag = (event.target && event.target.tagName) || "";
  if (["INPUT", "SELECT", "TEXTAREA", "BUTTON"].includes(tag) || $("app").hidden) return;
  if (["0", "1", "2"].includes(event.key)) {
    event.preventDefault();
    grade(Number(event.key));
  } else if (event.key === "ArrowDown" || event.key === "j") {
    event.preventDefault();
    select(Math.min(state.selected + 1, state.items.length - 1));
  } else if (event.key === "ArrowUp" || event.key === "k") {
    event.preventDefault();
    select(Math.max(state.selected - 1, 0));
  }
}

async function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  try {
    const info = await (await api("/info/")).json();
    const select = $("upload-emptied");
    select.innerHTML = "";
    info.labels.forEach((name) => {
      const o = document.createElement("option");
      o.value = name;
      o.textContent = name;
      select.appendChild(o);
    });
    await refresh();
  } catch (e) {
    if (e.message !== "not logged in") say(e.message, false);
  }
}

async function boot() {
  $("login-form").addEventListener("submit", login);
  $("confirm-button").addEventListener("click", confirmCase);
  $("download-button").addEventListener("click", downloadPackage);
  $("upload-form").addEventListener("submit", upload);
  document.addEventListener("keydown", onKey);
  const auth = await (await fetch("/auth/")).json();
  state.auth = !!auth.enabled;
  if (state.auth && !state.token) {
    showLogin();
    return;
  }
  await start();
}

boot();
