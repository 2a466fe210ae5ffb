// alqa editor: the pseudo label as NiiVue's drawing layer, painted and erased per organ, with undo/redo, "remove on
// purpose", and the edited label written as a NIfTI on the package's grid for PUT /datastore/label. Plain script.
//
// Every finished stroke is compared with the last committed state (a copy of the bitmap), so the history holds only
// the voxels each edit changed (undo AND redo, which NiiVue's own undo lacks), and erasing can keep to one organ.
"use strict";

// indices where two bitmaps differ, compared four voxels at a time (a 512x512x300 label is 78 M voxels per stroke)
function changedVoxels(a, b) {
  const idx = [];
  const words = a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0 ? a.length >> 2 : 0;
  const a32 = new Uint32Array(a.buffer, a.byteOffset, words);
  const b32 = new Uint32Array(b.buffer, b.byteOffset, words);
  for (let w = 0; w < words; w++) {
    if (a32[w] !== b32[w]) {
      for (let i = w * 4; i < w * 4 + 4; i++) if (a[i] !== b[i]) idx.push(i);
    }
  }
  for (let i = words * 4; i < a.length; i++) if (a[i] !== b[i]) idx.push(i);
  return idx;
}

class AlqaEditor {
  constructor(viewer, onChange) {
    this.viewer = viewer;
    this.onChange = onChange || (() => {});
    this.organs = viewer.manifest.organs;
    this.organ = this.organs.length ? this.organs[0].value : 1;
    this.tool = "navigate";
    this.brush = 1;
    this.undoStack = [];
    this.redoStack = [];
    this.emptied = new Set();
    this.shadow = new Uint8Array(viewer.nv.drawBitmap);
    this.original = new Uint8Array(viewer.nv.drawBitmap);
    viewer.nv.onDrawingChanged = (action) => { if (action === "draw") this.commit(); };
  }

  get nv() { return this.viewer.nv; }

  organName(value) {
    const o = this.organs.find((x) => x.value === value);
    return o ? o.name : String(value);
  }

  setOrgan(value) {
    this.organ = value;
    this.setTool(this.tool);
  }

  // navigate | paint | erase | fill (fill: an outline drawn with the pen is filled when released)
  setTool(tool) {
    this.tool = tool;
    const nv = this.nv;
    nv.opts.penSize = this.brush;
    if (tool === "navigate") {
      nv.setDrawingEnabled(false);
    } else {
      nv.setDrawingEnabled(true);
      nv.setPenValue(tool === "erase" ? 0 : this.organ, tool === "fill");
    }
    this.onChange();
  }

  setBrush(size) {
    this.brush = Math.max(1, Math.min(25, Math.round(size)));
    this.nv.opts.penSize = this.brush;
    this.onChange();
  }

  // the voxels a stroke changed; an erase only takes voxels of the selected organ away
  commit() {
    const now = this.nv.drawBitmap;
    const before = this.shadow;
    const idx = changedVoxels(now, before);
    const kept = [];
    for (const i of idx) {
      if (this.tool === "erase" && before[i] !== this.organ) now[i] = before[i]; // another organ: left as it was
      else kept.push(i);
    }
    if (kept.length !== idx.length) this.nv.refreshDrawing(true);
    if (kept.length) this.push(Uint32Array.from(kept), null);
  }

  // records a change already made to the bitmap (after = the bitmap's values now, or `value` everywhere)
  push(idx, value) {
    const now = this.nv.drawBitmap;
    const before = new Uint8Array(idx.length);
    const after = new Uint8Array(idx.length);
    for (let k = 0; k < idx.length; k++) {
      before[k] = this.shadow[idx[k]];
      after[k] = value === null ? now[idx[k]] : value;
      this.shadow[idx[k]] = after[k];
    }
    this.undoStack.push({ idx, before, after });
    this.redoStack = [];
    this.onChange();
  }

  apply(step, values) {
    const now = this.nv.drawBitmap;
    for (let k = 0; k < step.idx.length; k++) {
      now[step.idx[k]] = values[k];
      this.shadow[step.idx[k]] = values[k];
    }
    this.nv.refreshDrawing(true);
    this.onChange();
  }

  undo() {
    const step = this.undoStack.pop();
    if (!step) return false;
    this.apply(step, step.before);
    this.redoStack.push(step);
    return true;
  }

  redo() {
    const step = this.redoStack.pop();
    if (!step) return false;
    this.apply(step, step.after);
    this.undoStack.push(step);
    return true;
  }

  // "remove on purpose": every voxel of the organ cleared, and the organ named in the submission's emptied_organs
  removeOrgan(value) {
    const now = this.nv.drawBitmap;
    const idx = [];
    for (let i = 0; i < now.length; i++) if (now[i] === value) idx.push(i);
    for (const i of idx) now[i] = 0;
    this.emptied.add(this.organName(value));
    this.nv.refreshDrawing(true);
    this.push(Uint32Array.from(idx), 0);
    return idx.length;
  }

  voxelCounts() {
    const counts = new Uint32Array(256);
    const now = this.nv.drawBitmap;
    for (let i = 0; i < now.length; i++) counts[now[i]]++;
    return counts;
  }

  // organs removed on purpose that are still empty (one painted again is no longer emptied)
  emptiedOrgans() {
    const counts = this.voxelCounts();
    return this.organs.filter((o) => this.emptied.has(o.name) && counts[o.value] === 0).map((o) => o.name);
  }

  // voxels whose value differs from the package's pseudo label (computed on demand: one pass)
  editedVoxels() {
    let n = 0;
    for (let i = 0; i < this.shadow.length; i++) if (this.shadow[i] !== this.original[i]) n++;
    return n;
  }

  dirty() {
    return this.undoStack.length > 0;
  }

  // the edited label as a gzip NIfTI on the CT's own grid and orientation (NiiVue writes the drawing back to native order)
  async labelFile() {
    const bytes = await this.nv.volumes[0].saveToUint8Array("label.nii.gz", this.nv.drawBitmap);
    return new Blob([bytes], { type: "application/gzip" });
  }

  labelInfo() {
    return this.organs.map((o) => ({ name: o.name, idx: o.value }));
  }
}

window.AlqaEditor = AlqaEditor;
