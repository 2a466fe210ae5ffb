// alqa worklist: the case opened in the viewer and editor (viewer.js, editor.js): its lease, volumes, legend, toolbars,
// attention regions and Save. Shares app.js's page state (`state`, `api`, `say`). Plain script, no build step.
"use strict";

async function fetchVolume(url) {
  if (state.volumes.has(url)) return state.volumes.get(url).slice(0);
  const buffer = await (await api(url)).arrayBuffer(); // sent gzip-encoded, inflated by the browser
  let total = buffer.byteLength;
  for (const b of state.volumes.values()) total += b.byteLength;
  while (total > VOLUME_CACHE_BYTES && state.volumes.size) {
    const [oldest, b] = state.volumes.entries().next().value;
    state.volumes.delete(oldest);
    total -= b.byteLength;
  }
  if (buffer.byteLength <= VOLUME_CACHE_BYTES) state.volumes.set(url, buffer.slice(0));
  return buffer;
}

async function openCase() {
  const item = current();
  if (!item || !item.package_id) return;
  if (state.editor && state.editor.dirty() && state.opened !== item.case_id) {
    say(`unsaved edits on ${state.opened}: save them or undo them before opening another case`, false);
    return;
  }
  say(`opening ${item.case_id} ...`);
  state.readOnly = false;
  try {
    await api(`/alqa/cases/${encodeURIComponent(item.case_id)}/lease`, { method: "POST" });
  } catch (e) {
    if (e.status !== 409) throw e;
    state.readOnly = true; // another reader holds it: look, do not edit
  }
  const manifest = await (await api(`/alqa/cases/${encodeURIComponent(item.case_id)}/${encodeURIComponent(item.package_id)}/viewer`)).json();
  if (!state.viewer) state.viewer = new AlqaViewer($("viewer-canvas"), say);
  $("viewer").hidden = false;
  const timing = await state.viewer.open(manifest, fetchVolume, async (url) => (await api(url)).json());
  state.opened = item.case_id;
  state.editor = new AlqaEditor(state.viewer, renderEditState);
  renderLegend(manifest.organs);
  const link = $("slicer-link");
  const abs = (p) => encodeURIComponent(location.origin + p);
  link.href = `slicer://viewer/?image=${abs(manifest.slicer["image.nii"])}&segmentation=${abs(manifest.slicer["pseudo_label.seg.nrrd"])}&show3d=true`;
  link.hidden = false;
  syncToolbar();
  renderEditState();
  $("region-info").textContent = `${state.viewer.regions.length} attention region(s): press n to visit them`;
  say(`${item.case_id} ready in ${(timing.total_ms / 1000).toFixed(2)} s` + (state.readOnly ? " (held by another reader: view only)" : ""), !state.readOnly);
  await refresh();
}

async function releaseCase() {
  const item = current();
  if (!item) return;
  try {
    await api(`/alqa/cases/${encodeURIComponent(item.case_id)}/lease`, { method: "DELETE" });
    say(`released ${item.case_id}`);
    await refresh();
  } catch (e) {
    say(`release: ${e.message}`, false);
  }
}

function renderLegend(organs) {
  const legend = $("legend");
  legend.replaceChildren();
  for (const o of organs) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.organ = o.name;
    b.dataset.value = o.value;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = `rgb(${o.color.join(",")})`;
    b.append(swatch, document.createTextNode(o.name));
    b.addEventListener("click", () => { if (state.editor) { state.editor.setOrgan(o.value); syncToolbar(); } });
    legend.appendChild(b);
  }
}

function syncToolbar() {
  const v = state.viewer;
  const e = state.editor;
  if (!v || !v.nv) return;
  document.querySelectorAll("#view-toolbar [data-view]").forEach((b) => b.classList.toggle("on", b.dataset.view === v.view));
  const w = v.currentWindow();
  document.querySelectorAll("#view-toolbar [data-preset]").forEach((b) => b.classList.toggle("on", b.dataset.preset === w.preset));
  $("window-width").value = Math.round(w.width);
  $("window-level").value = Math.round(w.level);
  $("attention-button").textContent = `Attention: ${v.attentionMode}`;
  if (e) {
    document.querySelectorAll("#edit-toolbar [data-tool]").forEach((b) => b.classList.toggle("on", b.dataset.tool === e.tool));
    document.querySelectorAll("#legend button").forEach((b) => b.classList.toggle("on", Number(b.dataset.value) === e.organ));
    $("brush-size").value = e.brush;
  }
  for (const id of ["save-button", "remove-organ"]) $(id).disabled = state.readOnly;
  document.querySelectorAll("#edit-toolbar [data-tool]").forEach((b) => { b.disabled = state.readOnly && b.dataset.tool !== "navigate"; });
}

function renderEditState() {
  const e = state.editor;
  if (!e) return;
  const emptied = e.emptied.size ? ` · removed on purpose: ${[...e.emptied].join(", ")}` : "";
  $("edit-state").textContent = `tool ${e.tool}, organ ${e.organName(e.organ)}, brush ${e.brush} · ${e.undoStack.length} edit(s), ${e.redoStack.length} to redo${emptied}`;
  syncToolbar();
}

function showRegion(r) {
  if (!r) return;
  const v = state.viewer;
  const what = r.source === "organ" ? `${r.organ} (an organ to fix; the package has no attention map)` : `${r.organ || "no organ"}${r.to_fix ? " (to fix)" : ""}`;
  $("region-info").textContent = `region ${v.region + 1}/${v.regions.length}: ${what}, ${r.volume_ml.toFixed(2)} mL`;
}

async function saveLabel() {
  const e = state.editor;
  const item = state.items.find((it) => it.case_id === state.opened);
  if (!e || !item || state.readOnly) return;
  say("saving ...");
  try {
    const form = new FormData();
    form.append("params", JSON.stringify({ model: "alqa web viewer", label_info: e.labelInfo(), emptied_organs: e.emptiedOrgans() }));
    form.append("label", await e.labelFile(), `${item.case_id}_${item.package_id}_label.nii.gz`);
    const image = `${item.case_id}.${state.viewer.manifest.package_id}`;
    const r = await (await api(`/datastore/label?image=${encodeURIComponent(image)}`, { method: "PUT", body: form })).json();
    say(`${r.message} (${e.editedVoxels()} voxel(s) differ from the pseudo label)`);
    e.undoStack = [];
    e.redoStack = [];
    renderEditState();
    await refresh();
  } catch (err) {
    say(`save: ${err.message}`, false);
  }
}

function wireCase() {
  $("save-button").addEventListener("click", saveLabel);
  $("undo-button").addEventListener("click", () => state.editor && state.editor.undo());
  $("redo-button").addEventListener("click", () => state.editor && state.editor.redo());
  $("next-region").addEventListener("click", () => state.viewer && showRegion(state.viewer.jump(1)));
  $("prev-region").addEventListener("click", () => state.viewer && showRegion(state.viewer.jump(-1)));
  $("attention-button").addEventListener("click", () => { if (state.viewer) { state.viewer.cycleAttention(); syncToolbar(); } });
  $("remove-organ").addEventListener("click", () => {
    const e = state.editor;
    if (!e) return;
    const n = e.removeOrgan(e.organ);
    say(`${e.organName(e.organ)} removed on purpose (${n} voxels); it is sent as emptied on save`);
  });
  $("brush-size").addEventListener("change", (ev) => state.editor && state.editor.setBrush(Number(ev.target.value)));
  for (const id of ["window-width", "window-level"]) {
    $(id).addEventListener("change", () => state.viewer && state.viewer.setWindow(Number($("window-width").value), Number($("window-level").value)));
  }
  document.querySelectorAll("#view-toolbar [data-view]").forEach((b) => b.addEventListener("click", () => { state.viewer.setView(b.dataset.view); syncToolbar(); }));
  document.querySelectorAll("#view-toolbar [data-preset]").forEach((b) => b.addEventListener("click", () => { state.viewer.setPreset(b.dataset.preset); syncToolbar(); }));
  document.querySelectorAll("#edit-toolbar [data-tool]").forEach((b) => b.addEventListener("click", () => state.editor && state.editor.setTool(b.dataset.tool)));
  $("viewer").addEventListener("mouseup", () => setTimeout(syncToolbar, 0)); // a right-drag may have changed the window
}
