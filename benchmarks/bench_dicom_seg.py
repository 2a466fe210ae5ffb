"""DICOM-SEG export on the real series: size and write time against writing the same label as NIfTI.

Run: ``.venv/bin/python benchmarks/bench_dicom_seg.py [--repeats 5]``

In one process, on a copy of ../shared/data/real-ct-dicom/series (20 JPEG 2000
slices of 512 x 512, with the UIDs it leaves empty written in) and its
TotalSegmentator label remapped onto the organ table (6 organs present):

1. baseline ``nifti``: :func:`alqa_core.io.nifti.write_label` of the label
   (gzip NIfTI, as alqa writes every label);
2. :func:`alqa_core.export.dicom_seg.write_case_seg` for BINARY and LABELMAP,
   uncompressed (Explicit VR Little Endian) and compressed (JPEG 2000 lossless
   for BINARY, JPEG-LS lossless for LABELMAP). Its time is the whole case:
   reading the series' headers, checking the label's grid, building the SEG
   with highdicom and saving it atomically.

Two parts of every SEG write are timed alone too: reading and sorting the
headers, and the grid check with the label placed on the frames.

Times are the best of ``--repeats`` (after one warm-up call each); ratios are
against the NIfTI baseline's time and size.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.uid import generate_uid

from alqa_core.export.dicom_seg import label_frames, read_source_series, write_case_seg
from alqa_core.io.dicom import read_dicom_series
from alqa_core.io.nifti import read_label, write_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.organs import class_map_preset, remap_labels
from alqa_core.volume import LabelMap

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-ct-dicom"
VARIANTS = (("BINARY", False), ("BINARY", True), ("LABELMAP", False), ("LABELMAP", True))


def series_with_uids(folder: Path) -> Path:
    shutil.copytree(REAL / "series", folder)
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["alqa-bench", "study", ds.FrameOfReferenceUID])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["alqa-bench", "series", ds.FrameOfReferenceUID])
        ds.save_as(path)
    return folder


def label_on_series_grid(folder: Path) -> LabelMap:
    grid = read_dicom_series(folder).grid
    ts = read_label(REAL / "totalsegmentator_v2_labels.nii.gz")
    array = remap_labels(np.asarray(ts.array), class_map_preset("total"), T).array
    transform = ornt_transform(io_orientation(ts.affine), io_orientation(grid.affine))
    moved = LabelMap(np.ascontiguousarray(apply_orientation(array, transform)), ts.affine @ inv_ornt_aff(transform, ts.shape))
    assert moved.grid.matches(grid)
    return LabelMap(moved.array, grid.affine)


def best(fn, repeats: int) -> float:
    fn()  # warm-up: first-call imports and caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, highdicom {hd.__version__}, pydicom {pydicom.__version__}, {platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="alqa-bench-seg-") as tmp:
        tmp = Path(tmp)
        series = series_with_uids(tmp / "series")
        label = label_on_series_grid(series)
        provenance = {n: "pseudo" for n in T.names} | {"liver": "revised", "spleen": "original"}
        source_kib = sum(p.stat().st_size for p in series.iterdir()) / 1024
        print(f"source: 20 x 512 x 512 JPEG 2000 slices ({source_kib:.0f} KiB); label organs: "
              f"{[T.name_of(v) for v in np.unique(label.array) if v]}")

        nifti = tmp / "label.nii.gz"
        base_s = best(lambda: write_label(nifti, label), args.repeats)
        base_kib = nifti.stat().st_size / 1024
        rows = [("nifti (baseline)", "-", base_kib, base_s)]
        for seg_type, compress in VARIANTS:
            out = tmp / f"{seg_type}_{compress}.dcm"
            result = {}

            def run(out=out, result=result, seg_type=seg_type, compress=compress):
                result["r"] = write_case_seg("realct", series, label, provenance, T, out, 1, seg_type, compress)

            seconds = best(run, args.repeats)
            syntax = str(pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID.name)
            rows.append((f"{seg_type.lower()} {syntax}", str(result["r"].n_frames), out.stat().st_size / 1024, seconds))

        headers_s = best(lambda: read_source_series(series), args.repeats)
        sources = read_source_series(series)
        frames_s = best(lambda: label_frames(label, sources, series), args.repeats)

    print(f"\n{'what':<52} {'frames':>6} {'size KiB':>9} {'x nifti':>8} {'write s':>8} {'x nifti':>8}")
    for name, frames, kib, seconds in rows:
        print(f"{name:<52} {frames:>6} {kib:>9.0f} {kib / base_kib:>8.1f} {seconds:>8.3f} {seconds / base_s:>8.1f}")
    print(f"\nwithin every SEG write: reading and sorting the 20 headers {headers_s:.3f} s ({headers_s / base_s:.1f} x nifti), "
          f"grid check + label onto the frames {frames_s:.3f} s ({frames_s / base_s:.1f} x nifti); the rest is highdicom")


if __name__ == "__main__":
    main()
