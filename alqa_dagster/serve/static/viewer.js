// alqa viewer: one work package in NiiVue (vendor/niivue), the CT with window/level, views, the attention layer and
// the jump from one attention region to the next. Editing the label is editor.js. Plain script, no build step.
"use strict";

const VIEWS = ["axial", "coronal", "sagittal", "multiplanar", "render"];
const TEXTURE6_GRADIENT = 33990; // NiiVue's texture units for its gradient volume and the scratch volume that builds it
const TEXTURE8_GRADIENT_TEMP = 33992;
// overlay: translucent; outline: NiiVue's outlined overlay (opaque, dark contour); hidden
const ATTENTION_MODES = ["overlay", "outline", "hidden"];

class AlqaViewer {
  constructor(canvas, say) {
    this.canvas = canvas;
    this.say = say || (() => {});
    this.nv = null;
    this.manifest = null;
    this.regions = [];
    this.region = -1;
    this.view = "axial";
    this.attentionMode = "overlay";
    this.window = null;
    this.timing = null;
  }

  // Opens one package: `fetchVolume(url)` gives an ArrayBuffer (the caller adds the token and keeps a cache).
  async open(manifest, fetchVolume, fetchRegions) {
    const t0 = performance.now();
    if (this.nv) {
      this.close();
      this.canvas = AlqaViewer.freshCanvas(this.canvas); // the old one's WebGL context was released
    }
    this.manifest = manifest;
    const nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1], show3Dcrosshair: true, isRadiologicalConvention: true, dragAndDropEnabled: false,
      logLevel: "warn", loadingText: "", crosshairColor: [0.2, 0.9, 1, 1], penSize: 1, maxDrawUndoBitmaps: 2,
      isNearestInterpolation: true, multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS,
    });
    this.nv = nv;
    if (AlqaViewer.skipUnusedGradient) AlqaViewer.slimGradient(nv);
    await nv.attachToCanvas(this.canvas);
    const regionsPromise = fetchRegions(manifest.regions_url);
    const [image, label, attention] = await Promise.all(["image", "pseudo_label", "attention"].map((k) => fetchVolume(manifest.volumes[k].url)));
    const t1 = performance.now();
    const [abdW, abdL] = manifest.windows.abdomen;
    const ct = await niivue.NVImage.new(image, "image.nii", "gray", 1, null, abdL - abdW / 2, abdL + abdW / 2, true);
    const att = await niivue.NVImage.new(attention, "attention.nii", "warm", 1, null, 1, 255, true);
    const lab = await niivue.NVImage.new(label, "pseudo_label.nii", "gray", 1, null, 0, 255, true);
    const t2 = performance.now();
    nv.volumes = [ct, att];
    nv.back = ct;
    nv.overlays = [att]; // what addVolume would set, without a GPU pass per volume
    this.applyAttentionMode(false);
    nv.drawLut = niivue.cmapper.makeDrawLut(this.drawColormap(manifest.organs)); // setDrawColormap would refresh every layer once more
    nv.updateGLVolume(); // one pass over every layer, not one per added volume
    if (!nv.loadDrawing(lab)) throw new Error("the pseudo label is not on the CT's grid");
    nv.setDrawOpacity(0.5);
    this.window = { width: abdW, level: abdL, preset: "abdomen" };
    this.setView(this.view);
    this.regions = (await regionsPromise).regions;
    this.region = -1;
    this.sync();
    const t3 = performance.now();
    this.timing = { fetch_ms: t1 - t0, parse_ms: t2 - t1, gpu_ms: t3 - t2, total_ms: t3 - t0 };
    window.alqaViewerTiming = this.timing;
    return this.timing;
  }

  // Waits until the GPU has done all queued work (reading one pixel back does), so timings mean "on screen".
  sync() {
    if (!this.nv) return;
    this.nv.drawScene();
    const gl = this.nv.gl;
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
  }

  // NiiVue builds a full-size gradient volume on every refresh of the layers (a blur and a Sobel pass over every voxel)
  // for shaded 3D rendering, which no shader reads while gradientAmount and gradientOpacity are 0 (its defaults, and
  // ours). On a software renderer (SwiftShader, a workstation without a GPU) those passes were most of the load time at
  // 512x512x300 and of every window change. Their two textures are made one texel per slice, so the passes cost nothing;
  // the rest of NiiVue is untouched (benchmarks/bench_serve.py --viewer times both ways).
  static slimGradient(nv) {
    const rgbaTex = nv.rgbaTex.bind(nv);
    nv.alqaSlimTextures = 0;
    nv.rgbaTex = (texture, unit, dims, isInit = false) => {
      const unused = nv.opts.gradientAmount === 0 && nv.opts.gradientOpacity === 0;
      // dims: a NIfTI dims array ([ndim, x, y, z, ...]); NiiVue's 2x2x2 placeholders are left alone
      if (unused && (unit === TEXTURE6_GRADIENT || unit === TEXTURE8_GRADIENT_TEMP) && dims.length >= 4 && dims[1] * dims[2] > 4) {
        nv.alqaSlimTextures++;
        return rgbaTex(texture, unit, [dims[0], 1, 1, dims[3]], isInit);
      }
      return rgbaTex(texture, unit, dims, isInit);
    };
  }

  drawColormap(organs) {
    const cmap = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""] };
    for (const o of organs) {
      cmap.R.push(o.color[0]); cmap.G.push(o.color[1]); cmap.B.push(o.color[2]); cmap.A.push(255); cmap.I.push(o.value); cmap.labels.push(o.name);
    }
    return cmap;
  }

  close() {
    if (this.nv) {
      const lose = this.nv.gl && this.nv.gl.getExtension("WEBGL_lose_context");
      this.nv.volumes = [];
      this.nv.drawBitmap = null;
      if (lose) lose.loseContext(); // free the GPU copies of the patient's volumes now
    }
    this.nv = null;
    this.manifest = null;
    this.regions = [];
    this.region = -1;
    this.timing = null;
  }

  // a fresh canvas: a lost WebGL context cannot be reused
  static freshCanvas(old) {
    const canvas = document.createElement("canvas");
    canvas.id = old.id;
    canvas.className = old.className;
    old.replaceWith(canvas);
    return canvas;
  }

  setView(view) {
    if (!this.nv) return;
    const types = { axial: this.nv.sliceTypeAxial, coronal: this.nv.sliceTypeCoronal, sagittal: this.nv.sliceTypeSagittal,
      multiplanar: this.nv.sliceTypeMultiplanar, render: this.nv.sliceTypeRender };
    this.view = view;
    this.nv.setSliceType(types[view]);
  }

  cycleView() {
    this.setView(VIEWS[(VIEWS.indexOf(this.view) + 1) % VIEWS.length]);
    return this.view;
  }

  setWindow(width, level, preset = "") {
    if (!this.nv || !(width > 0)) return;
    const ct = this.nv.volumes[0];
    ct.cal_min = level - width / 2;
    ct.cal_max = level + width / 2;
    this.window = { width, level, preset };
    this.nv.updateGLVolume();
  }

  setPreset(name) {
    const [w, l] = this.manifest.windows[name];
    this.setWindow(w, l, name);
  }

  cyclePreset() {
    const names = Object.keys(this.manifest.windows);
    this.setPreset(names[(names.indexOf(this.window.preset) + 1) % names.length]);
    return this.window.preset;
  }

  // the window after a right-drag in NiiVue (it changes the CT's cal_min/cal_max itself)
  currentWindow() {
    if (!this.nv) return this.window;
    const ct = this.nv.volumes[0];
    const width = Math.round(ct.cal_max - ct.cal_min);
    const level = Math.round((ct.cal_max + ct.cal_min) / 2);
    if (width !== Math.round(this.window.width) || level !== Math.round(this.window.level)) this.window = { width, level, preset: "" };
    return this.window;
  }

  applyAttentionMode(update = true) {
    if (!this.nv || this.nv.volumes.length < 2) return;
    const att = this.nv.volumes[1];
    att.opacity = this.attentionMode === "hidden" ? 0 : (this.attentionMode === "outline" ? 1 : 0.45);
    this.nv.overlayOutlineWidth = this.attentionMode === "outline" ? 1 : 0;
    if (update) this.nv.updateGLVolume();
  }

  cycleAttention() {
    this.attentionMode = ATTENTION_MODES[(ATTENTION_MODES.indexOf(this.attentionMode) + 1) % ATTENTION_MODES.length];
    this.applyAttentionMode();
    return this.attentionMode;
  }

  // Moves the crosshair, and so every slice, to the next (step 1) or previous (-1) attention region.
  jump(step = 1) {
    if (!this.nv || !this.regions.length) return null;
    this.region = (this.region + step + this.regions.length) % this.regions.length;
    const r = this.regions[this.region];
    this.nv.scene.crosshairPos = this.nv.mm2frac(r.center_mm);
    this.nv.drawScene();
    this.nv.createOnLocationChange();
    return r;
  }

  currentRegion() {
    return this.region >= 0 ? this.regions[this.region] : null;
  }

  crosshairMM() {
    return this.nv ? Array.from(this.nv.frac2mm(this.nv.scene.crosshairPos)).slice(0, 3) : null;
  }
}

AlqaViewer.skipUnusedGradient = true;
window.AlqaViewer = AlqaViewer;
