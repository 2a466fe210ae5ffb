"""Time preprocess_ct / preprocess_label / to_original_grid on a real-sized CT.

    .venv/bin/python benchmarks/bench_preprocess.py

Uses the geometry of ../shared/data/real-ct-dicom (512x512x20, 0.977x0.977x2 mm,
LAS) and a CT built from its TotalSegmentator label (labelled tissue 40 HU,
the rest -1000 HU) when it is there, else a phantom body ellipse on that grid.
Single-threaded (the numpy and scipy calls used are). Prints the
median of a few runs and the round-trip liver Dice at 1.5 mm.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from alqa_core.config.sections import PreprocessConfig
from alqa_core.ingest.preprocess import preprocess_ct, preprocess_label, to_original_grid
from alqa_core.volume import CTVolume, LabelMap

LABEL = Path(__file__).resolve().parents[1].parent / "shared/data/real-ct-dicom/totalsegmentator_v2_labels.nii.gz"


def timed(fn, repeat=3):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def load():
    if LABEL.exists():
        img = nib.load(str(LABEL))
        lab = np.asarray(img.dataobj).astype(np.uint8)
        return lab, img.affine, "real TotalSegmentator label grid"
    affine = np.diag([-0.9765625, 0.9765625, 2.0, 1.0])
    i, j = np.mgrid[:512, :512]
    body = ((i - 256) / 200.0) ** 2 + ((j - 256) / 150.0) ** 2 <= 1
    lab = np.repeat(body[..., None], 20, axis=2).astype(np.uint8) * 5
    return lab, affine, "phantom ellipse"


def dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def main():
    lab, affine, what = load()
    ct = CTVolume(np.where(lab > 0, 40.0, -1000.0).astype(np.float32), affine)
    label = LabelMap(lab, affine)
    print(f"input: {what}, shape {ct.shape}, spacing {tuple(round(s, 4) for s in ct.spacing_mm)}")
    for crop in (False, True):
        cfg = PreprocessConfig(spacing_mm=(1.5, 1.5, 1.5), crop_to_body=crop)
        t, pre = timed(lambda: preprocess_ct(ct, cfg))
        print(f"preprocess_ct crop={crop}: {t:.3f} s -> {pre.array.shape}")
        t, lab_out = timed(lambda: preprocess_label(label, pre.record))
        print(f"preprocess_label crop={crop}: {t:.3f} s")
        probs = np.stack([(lab_out == v).astype(np.uint8) * 255 for v in range(10)])
        t, back = timed(lambda: to_original_grid(probs, pre.record, "linear"))
        print(f"to_original_grid 10ch uint8 linear crop={crop}: {t:.3f} s -> {back.shape} {back.dtype}")
        t, _ = timed(lambda: to_original_grid(probs[0].astype(np.float32) / 255, pre.record, "linear"))
        print(f"to_original_grid 1ch float32 linear crop={crop}: {t:.3f} s")
        t, lab_back = timed(lambda: to_original_grid(lab_out, pre.record, "nearest"))
        print(f"to_original_grid label nearest crop={crop}: {t:.3f} s")
        liver_prob = back[5] >= 128
        print(
            f"  liver Dice 1.5 mm round trip: nearest {dice(lab_back == 5, lab == 5):.4f}, "
            f"linear prob>=0.5 {dice(liver_prob, lab == 5):.4f}"
        )


if __name__ == "__main__":
    main()
