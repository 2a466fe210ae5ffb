"""Attention maps (Eq. 1-4): alqa's vectorised kernel vs a straightforward numpy transcription vs memcpy.

Run: ``.venv/bin/python benchmarks/bench_attention.py [--sizes small,large] [--repeats 5] [--backends numpy,numba]``

In one process, per size, on the same uint8 block (members x organs x i x j x k):

1. ``memcpy``: ``np.copyto`` of the block into a preallocated array (the
   machine's copy bandwidth on these bytes, best of ``--repeats``, measured
   before and after the kernels: the machine is shared);
2. ``transcription``: Eq. 1-4 written out the obvious way (float64
   probabilities, ``std(axis=0)``, entropy with ``log``, overlap by summing
   binaries), with the same cleaning (scipy on the whole volume), once;
3. ``alqa``: :func:`alqa_core.attention.compute_attention`, best of ``--repeats``.

"core" is Eq. 1-3 with their thresholds (alqa: ``kernel.organ_statistics``,
once per ``--backends`` entry: ``numpy`` is the kernel as it was before numba,
``numba`` the compiled one that ``auto`` picks, ``torch`` the dense GPU
kernel run on this CPU; every backend's output is checked bit for bit
against numpy's; transcription: everything before cleaning). "total" adds
the cleaning in mm, the heatmap and the attention sizes (``auto`` backend:
numba for blocks of 32 MiB and more).
GB/s is the block's size over the time. The first line gives numba's import
and first-call cost (compilation, or loading the on-disk cache).
The phantom is organ-like: 10 ellipsoid organs with sigmoid edges, members
jittered by ~1 mm, and three disagreement blobs; most voxels are background,
as in real soft predictions. A worst case (uniform noise: every voxel is
active) is reported for the small size.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
from scipy.special import entr

from alqa_core.attention.cleaning import clean_mask, ellipsoid_structure
from alqa_core.attention.compute import compute_attention
from alqa_core.attention.kernel import organ_statistics, resolve_backend
from alqa_core.config.sections import AttentionConfig

SIZES = {
    "small": ((160, 160, 64), (1.5, 1.5, 3.0)),
    "large": ((256, 256, 128), (1.0, 1.0, 2.0)),
}
ORGANS = (  # name, centre (fraction of the FOV), radii (mm)
    ("spleen", (0.78, 0.35, 0.6), (40, 28, 45)),
    ("kidney_right", (0.27, 0.72, 0.45), (26, 22, 45)),
    ("kidney_left", (0.73, 0.72, 0.45), (26, 22, 45)),
    ("gallbladder", (0.36, 0.3, 0.52), (13, 13, 22)),
    ("liver", (0.28, 0.42, 0.66), (70, 55, 60)),
    ("stomach", (0.62, 0.28, 0.66), (40, 30, 40)),
    ("aorta", (0.53, 0.62, 0.5), (10, 10, 300)),
    ("inferior_vena_cava", (0.44, 0.62, 0.5), (9, 9, 300)),
    ("pancreas", (0.55, 0.46, 0.45), (50, 9, 10)),
    ("duodenum", (0.44, 0.45, 0.36), (16, 11, 25)),
)


def phantom(shape, spacing, members=3, seed=0) -> np.ndarray:
    """uint8 (members, 10, *shape): round(255 * sigmoid(-distance / w)) per organ, jittered per member."""
    rng = np.random.default_rng(seed)
    fov = [n * s for n, s in zip(shape, spacing)]
    block = np.zeros((members, len(ORGANS), *shape), np.uint8)
    blobs = {(2, "pancreas"): (-35, 0, 0, 9, 0.0), (1, "stomach"): (0, 0, -30, 8, 1.0), (0, "gallbladder"): (0, 0, 0, 9, 0.0)}
    for m in range(members):
        for c, (name, frac, radii) in enumerate(ORGANS):
            centre = [f * L + rng.normal(0, 0.75) for f, L in zip(frac, fov)]
            radii = [r * (1 + rng.normal(0, 0.02)) for r in radii]
            w = rng.uniform(0.4, 0.8)  # mm: edge softness
            reach = [min(r + 8 * w + 2, 1e4) for r in radii]
            box = tuple(slice(max(int((ce - re) / s), 0), min(int((ce + re) / s) + 1, n)) for ce, re, s, n in zip(centre, reach, spacing, shape))
            g = np.meshgrid(*[(np.arange(b.start, b.stop) + 0.5) * s for b, s in zip(box, spacing)], indexing="ij", sparse=True)
            d = np.sqrt(sum(((x - ce) / r) ** 2 for x, ce, r in zip(g, centre, radii)))
            logit = -(d - 1) * min(radii) / w
            if (m, name) in blobs:  # a member that disagrees: adds (value 1) or removes (0) a ball
                dx, dy, dz, rad, value = blobs[(m, name)]
                b = np.sqrt(sum((x - ce - o) ** 2 for x, ce, o in zip(g, centre, (dx, dy, dz))))
                inside = 1 / (1 + np.exp(np.clip((b - rad) / w, -50, 50)))
                p = 1 / (1 + np.exp(-np.clip(logit, -50, 50)))
                p = np.maximum(p, inside) if value else p * (1 - inside)
            else:
                p = 1 / (1 + np.exp(-np.clip(logit, -50, 50)))
            block[(m, c, *box)] = np.rint(p * 255).astype(np.uint8)
    return block.copy()  # every page written: no untouched zero pages to flatter memcpy


def transcription(block, spacing, cfg):
    """Eq. 1-4 written out, dense, float64. Returns (heatmap uint8, organ voxels, core seconds, cleaning seconds)."""
    m_count, c_count = block.shape[:2]
    st = ellipsoid_structure(cfg.cleaning_radius_mm, spacing)
    heat = np.zeros(block.shape[1:], np.uint8)
    organ_vox = []
    t0 = time.perf_counter()
    high = block > 127  # p > 0.5
    organs_per_member = high.sum(axis=1)
    t_core, t_clean = time.perf_counter() - t0, 0.0
    for c in range(c_count):
        t0 = time.perf_counter()
        p = block[:, c] / 255.0
        std = p.std(axis=0)
        ent = (entr(p) + entr(1 - p)).mean(axis=0)
        overlap = (high[:, c] & (organs_per_member - high[:, c] >= 1)).any(axis=0)
        inc, unc = std > cfg.inconsistency_threshold, ent > cfg.uncertainty_threshold
        organ_vox.append(int((p.mean(0) > 0.5).sum()))
        t1 = time.perf_counter()
        h = std * clean_mask(inc, st, restore=cfg.cleaning_restore) + ent * clean_mask(unc, st, restore=cfg.cleaning_restore) + overlap
        if h.max() > 0:
            h = h / h.max()
        heat[c] = np.where(h > 0, np.maximum(np.rint(h * 255), 1), 0)
        t_core += t1 - t0
        t_clean += time.perf_counter() - t1
    return heat, organ_vox, t_core, t_clean


def best_of(fn, repeats):
    best = math.inf
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _same_bits(a, b) -> bool:
    fields = ("band", "inconsistent", "uncertain", "std", "entropy", "overlap")
    return a.keys() == b.keys() and all(
        getattr(a[c], f).dtype == getattr(b[c], f).dtype and getattr(a[c], f).tobytes() == getattr(b[c], f).tobytes() for c in a for f in fields
    ) and all(a[c].organ_voxels == b[c].organ_voxels for c in a)


def run(label, block, spacing, repeats, cfg, backends, with_transcription=True):
    m_count, c_count = block.shape[:2]
    organs = [f"organ{c}" for c in range(c_count)]
    gb = block.nbytes / 1e9
    dst = np.empty_like(block)
    t_copy, _ = best_of(lambda: np.copyto(dst, block), repeats)
    cov = np.ones((m_count, c_count), bool)
    block3 = block.reshape(m_count, c_count, -1)
    core = {}
    for b in backends:
        core[b] = best_of(lambda: organ_statistics(block3, cov, np.zeros(m_count, bool), list(range(c_count)), cfg, backend=b, device="cpu"), repeats)
    t_total, res = best_of(lambda: compute_attention(block, organs=organs, spacing_mm=spacing, config=cfg), repeats)
    t_copy2, _ = best_of(lambda: np.copyto(dst, block), repeats)  # again: the machine is shared
    t_copy = min(t_copy, t_copy2)
    bw = gb / t_copy
    auto = resolve_backend("auto", block.nbytes)
    print(f"\n== {label}: block {block.shape} uint8 = {block.nbytes / 1e6:.0f} MB, spacing {spacing} mm")
    print(f"  attention: {res.size.attention_ml:.1f} mL over {sum(o.attention_voxels > 0 for o in res.size.organs)} organs")
    print(f"  {'':34s} {'time ms':>9s} {'GB/s':>7s} {'% memcpy':>9s}")
    print(f"  {'memcpy (np.copyto)':34s} {t_copy * 1e3:9.1f} {bw:7.2f} {100:8.0f}%")
    row = lambda name, t: print(f"  {name:34s} {t * 1e3:9.1f} {gb / t:7.2f} {100 * (gb / t) / bw:8.0f}%")  # noqa: E731
    ref = core["numpy"][1] if "numpy" in core else None
    for b, (t, out) in core.items():
        same = "" if ref is None or b == "numpy" else f"   bits equal numpy's: {_same_bits(ref, out)}"
        print(f"  {f'alqa core, {b} kernel':34s} {t * 1e3:9.1f} {gb / t:7.2f} {100 * (gb / t) / bw:8.0f}%{same}")
    row(f"alqa total ({auto}, cleaning, sizes)", t_total)
    t_core = core[auto][0] if auto in core else min(t for t, _ in core.values())
    print(f"  {'  of which cleaning + assembly':34s} {(t_total - t_core) * 1e3:9.1f}")
    if not with_transcription:
        return
    t = time.perf_counter()
    heat, organ_vox, tr_core, tr_clean = transcription(block, spacing, cfg)
    tr_total = time.perf_counter() - t
    row("transcription core", tr_core)
    print(f"  {'transcription cleaning (scipy)':34s} {tr_clean * 1e3:9.1f}")
    row("transcription total", tr_total)
    print(f"  speed-up vs transcription: core {tr_core / t_core:.1f}x, total {tr_total / t_total:.1f}x")
    diff = int(np.abs(res.heatmap.astype(int) - heat.astype(int)).max())
    same_region = bool(np.array_equal(res.heatmap > 0, heat > 0))
    voxel_ml = float(np.prod(spacing)) / 1000
    same_organ = all(abs(o.organ_ml - n * voxel_ml) < 1e-9 for o, n in zip(res.size.organs, organ_vox))
    ok = diff <= 1 and same_region and same_organ
    print(f"  outputs agree: {ok} (heatmap max |diff| {diff}/255, regions equal {same_region}, organ volumes equal {same_organ})")
    core_ok = (gb / t_core) / bw >= 0.5 and tr_core / t_core >= 5
    print(f"  targets (>= 50% of memcpy bandwidth and >= 5x the transcription) on core ({auto}): {'met' if core_ok else 'NOT met'}; "
          f"on total: {'met' if (gb / t_total) / bw >= 0.5 and tr_total / t_total >= 5 else 'NOT met'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small,large")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backends", default="numpy,numba", help="kernels timed for the core (numpy, numba, torch)")
    args = ap.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    cfg = AttentionConfig()
    t = time.perf_counter()
    auto = resolve_backend("auto")  # imports numba (and the compiled kernel's module) when installed
    t_import = time.perf_counter() - t
    tiny = np.zeros((3, 2, 64), np.uint8)
    tiny[:, :, 10:20] = [[[200]], [[100]], [[30]]]
    t = time.perf_counter()
    organ_statistics(tiny, np.ones((3, 2), bool), np.zeros(3, bool), [0, 1], cfg)
    t_first = time.perf_counter() - t
    print(f"numpy {np.__version__}, {platform.processor() or platform.machine()}, single thread; auto backend: {auto} "
          f"(import {t_import:.2f} s, first call {t_first:.2f} s: compilation, or the on-disk cache)")
    for name in args.sizes.split(","):
        shape, spacing = SIZES[name]
        t = time.perf_counter()
        block = phantom(shape, spacing)
        print(f"\n(phantom {name} built in {time.perf_counter() - t:.1f} s)")
        run(f"{name}, organ-like phantom", block, spacing, args.repeats, cfg, backends)
        if name == "small":
            noise = np.random.default_rng(1).integers(0, 256, block.shape, dtype=np.uint8)
            run(f"{name}, worst case (uniform noise, every voxel active)", noise, spacing, max(1, args.repeats // 2), cfg, backends)
        del block


if __name__ == "__main__":
    main()
