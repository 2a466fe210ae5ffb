"""DICOM CT series -> :class:`CTVolume`, with pydicom.

Geometry follows the DICOM standard (PS3.3 C.7.6.2.1.1) and lands on the same
world grid as NIfTI files made by dicom2nifti / dcm2niix:

* ``ImageOrientationPatient`` gives the row direction (as the column index
  grows) and the column direction (as the row index grows); their cross
  product is the slice normal.
* Slices are ordered by ``ImagePositionPatient`` projected on that normal
  (ascending), never by ``InstanceNumber`` or file name.
* The array is indexed ``[i=column, j=row, k=slice]`` as nibabel and
  dicom2nifti produce, and the affine (LPS from DICOM) is turned into RAS+ by
  negating its first two rows.
* HU are ``stored * RescaleSlope + RescaleIntercept`` per slice.

Only geometry and pixels leave this module: nothing patient-identifying is
kept. Compressed transfer syntaxes decode through pydicom's plugins (JPEG 2000
needs pylibjpeg-openjpeg or GDCM). Every problem is an :class:`AlqaInputError`
that names the folder or file and the reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

from alqa_core.errors import AlqaInputError
from alqa_core.volume import CTVolume, Grid

log = logging.getLogger(__name__)

#: DICOM patient LPS -> nibabel RAS+ (x and y change sign).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: A step between neighbouring slices larger than this times the median step means missing slices.
MISSING_SLICE_FACTOR = 1.5
#: Slice positions may deviate from a regular line by this fraction of the step.
SLICE_POSITION_TOLERANCE = 0.1
#: Direction cosines of two slices of one series agree to this.
ORIENTATION_TOLERANCE = 1e-4
#: Pixel spacings of two slices of one series agree to this (mm).
PIXEL_SPACING_TOLERANCE_MM = 1e-3

#: Transfer syntax UID prefix -> what pydicom needs to decode it (shown in errors).
CODEC_HINTS: tuple[tuple[str, str], ...] = (
    ("1.2.840.10008.1.2.4.20", "pylibjpeg with pylibjpeg-openjpeg>=2 (HTJ2K)"),
    ("1.2.840.10008.1.2.4.9", "pylibjpeg with pylibjpeg-openjpeg, or GDCM (JPEG 2000)"),
    ("1.2.840.10008.1.2.4.8", "pyjpegls, or pylibjpeg with pylibjpeg-libjpeg, or GDCM (JPEG-LS)"),
    ("1.2.840.10008.1.2.4.57", "pylibjpeg with pylibjpeg-libjpeg, or GDCM (JPEG Lossless)"),
    ("1.2.840.10008.1.2.4.70", "pylibjpeg with pylibjpeg-libjpeg, or GDCM (JPEG Lossless)"),
    ("1.2.840.10008.1.2.4.5", "pylibjpeg with pylibjpeg-libjpeg, Pillow, or GDCM (JPEG)"),
    ("1.2.840.10008.1.2.5", "pylibjpeg-rle or NumPy (RLE)"),
)

_NO_UID = "<no SeriesInstanceUID>"


@dataclass(frozen=True)
class DicomSeriesInfo:
    """Technical facts about one series. Deliberately no names, ids, dates or institution."""

    series_uid: str
    modality: str
    n_slices: int
    rows: int
    columns: int
    transfer_syntax_uid: str
    transfer_syntax_name: str


@dataclass(frozen=True, eq=False)
class _Slice:
    """The geometry and rescale of one file (technical tags only)."""

    path: Path
    series_uid: str
    modality: str
    transfer_syntax: str
    rows: int
    columns: int
    pixel_spacing_mm: np.ndarray  # (row spacing, column spacing) as in DICOM
    orientation: np.ndarray  # (6,) row cosines then column cosines
    position_mm: np.ndarray  # (3,) LPS
    slope: float
    intercept: float


def codec_hint(transfer_syntax_uid: str) -> str:
    """Which package pydicom needs for this transfer syntax, for error messages."""
    for prefix, hint in CODEC_HINTS:
        if transfer_syntax_uid.startswith(prefix):
            return hint
    return "a pydicom pixel-data plugin (pylibjpeg or GDCM) that supports it"


# --------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------


def _list_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise AlqaInputError(folder, "DICOM folder does not exist")
    if not folder.is_dir():
        raise AlqaInputError(folder, "expected a folder holding one DICOM series, got a file")
    # Hidden files (.DS_Store, editor backups) are not slices; skipping them loses nothing.
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    subfolders = [p.name for p in entries if p.is_dir()]
    if not files:
        if subfolders:
            raise AlqaInputError(
                folder, f"no DICOM files directly in this folder, only subfolders {subfolders[:5]}: point at one series folder"
            )
        raise AlqaInputError(folder, "folder is empty: no DICOM files")
    if subfolders:
        log.warning("%s: ignoring subfolders %s (a series is the files directly in the folder)", folder, subfolders[:5])
    return files


def _names(paths: list[Path], limit: int = 5) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _floats(path: Path, ds: pydicom.Dataset, keyword: str, count: int) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or value == "":
        raise AlqaInputError(path, f"missing {keyword}: cannot place the slice in space")
    try:
        values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
        out = np.array([float(v) for v in values])
    except (TypeError, ValueError) as exc:
        raise AlqaInputError(path, f"malformed {keyword} {value!r} ({exc})") from exc
    if out.shape != (count,) or not np.all(np.isfinite(out)):
        raise AlqaInputError(path, f"{keyword} must hold {count} finite numbers, got {value!r}")
    return out


def _slice_header(path: Path, ds: pydicom.Dataset, need_pixels: bool) -> _Slice:
    if need_pixels and "PixelData" not in ds:
        raise AlqaInputError(path, "DICOM file holds no (complete) pixel data: not an image slice, or truncated")
    frames = ds.get("NumberOfFrames")
    if frames not in (None, "") and int(frames) > 1:
        raise AlqaInputError(path, f"multi-frame DICOM ({int(frames)} frames) is not supported; export single-frame slices")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise AlqaInputError(path, "colour DICOM (SamplesPerPixel > 1) is not a CT slice")
    rescale = []
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        value = ds.get(keyword)
        if value is None or value == "":
            raise AlqaInputError(path, f"missing {keyword}: cannot convert stored values to HU")
        rescale.append(float(value))
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not rows or not columns:
        raise AlqaInputError(path, "missing Rows/Columns")
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return _Slice(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        transfer_syntax=transfer_syntax,
        rows=int(rows),
        columns=int(columns),
        pixel_spacing_mm=_floats(path, ds, "PixelSpacing", 2),
        orientation=_floats(path, ds, "ImageOrientationPatient", 6),
        position_mm=_floats(path, ds, "ImagePositionPatient", 3),
        slope=rescale[0],
        intercept=rescale[1],
    )


def _read_folder(folder: Path, need_pixels: bool) -> list[tuple[_Slice, pydicom.Dataset]]:
    files = _list_files(folder)
    read, not_dicom = [], []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=not need_pixels)
        except InvalidDicomError:
            not_dicom.append(path)
            continue
        except Exception as exc:  # pydicom raises many types on truncated/corrupt files
            raise AlqaInputError(path, f"corrupt or unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
        read.append((path, ds))
    if not_dicom:
        raise AlqaInputError(folder, f"{len(not_dicom)} file(s) are not DICOM: {_names(not_dicom)}")
    return [(_slice_header(path, ds, need_pixels), ds) for path, ds in read]


# --------------------------------------------------------------------------
# Series selection and consistency
# --------------------------------------------------------------------------


def _group_by_series(folder: Path, slices: list, series_uid: str | None) -> list:
    groups: dict[str, list] = {}
    for item in slices:
        groups.setdefault(item[0].series_uid, []).append(item)
    listing = "; ".join(f"{uid or _NO_UID} ({len(items)} files)" for uid, items in sorted(groups.items()))
    if series_uid is not None:
        if series_uid not in groups:
            raise AlqaInputError(folder, f"no series with SeriesInstanceUID {series_uid!r}; the folder holds: {listing}")
        return groups[series_uid]
    if len(groups) > 1:
        raise AlqaInputError(
            folder, f"mixed series: {len(groups)} SeriesInstanceUIDs in one folder: {listing}; pass series_uid= to pick one"
        )
    return next(iter(groups.values()))


def _check_consistent(folder: Path, slices: list[_Slice]) -> None:
    if len(slices) < 2:
        raise AlqaInputError(folder, f"a single slice ({slices[0].path.name}) is not a 3D volume")
    modalities = Counter(s.modality for s in slices)
    if set(modalities) - {"CT", ""}:
        raise AlqaInputError(folder, f"not a CT series: Modality {dict(modalities)}")
    ref = slices[0]
    for s in slices[1:]:
        if (s.rows, s.columns) != (ref.rows, ref.columns):
            raise AlqaInputError(
                s.path,
                f"inconsistent slice size: {s.rows}x{s.columns} rows x columns, "
                f"but {ref.path.name} has {ref.rows}x{ref.columns}",
            )
        if np.abs(s.pixel_spacing_mm - ref.pixel_spacing_mm).max() > PIXEL_SPACING_TOLERANCE_MM:
            raise AlqaInputError(
                s.path,
                f"inconsistent PixelSpacing {s.pixel_spacing_mm.tolist()} mm, "
                f"but {ref.path.name} has {ref.pixel_spacing_mm.tolist()} mm",
            )
        if np.abs(s.orientation - ref.orientation).max() > ORIENTATION_TOLERANCE:
            raise AlqaInputError(
                s.path,
                f"inconsistent ImageOrientationPatient {s.orientation.tolist()}, "
                f"but {ref.path.name} has {ref.orientation.tolist()}",
            )
    row_dir, col_dir = ref.orientation[:3], ref.orientation[3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(float(row_dir @ col_dir)) > 1e-3
    ):
        raise AlqaInputError(ref.path, f"ImageOrientationPatient {ref.orientation.tolist()} is not two orthonormal vectors")
    if np.any(ref.pixel_spacing_mm <= 0):
        raise AlqaInputError(ref.path, f"PixelSpacing {ref.pixel_spacing_mm.tolist()} must be positive")


def _slice_order_and_affine(folder: Path, slices: list[_Slice]) -> tuple[np.ndarray, np.ndarray]:
    """Sort slices along the normal, check they are evenly spaced, build the RAS+ affine."""
    ref = slices[0]
    row_dir, col_dir = ref.orientation[:3], ref.orientation[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.stack([s.position_mm for s in slices])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    steps = np.diff(along[order])
    names = [slices[i].path.name for i in order]
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        i = int(dup[0])
        raise AlqaInputError(
            folder,
            f"two slices at the same position ({names[i]} and {names[i + 1]}, {along[order][i]:.3f} mm along the normal): "
            "duplicate or overlapping acquisitions",
        )
    median_step = float(np.median(steps))
    gaps = np.flatnonzero(steps > MISSING_SLICE_FACTOR * median_step)
    if gaps.size:
        i = int(gaps[0])
        missing = max(1, int(round(steps[i] / median_step)) - 1)
        raise AlqaInputError(
            folder,
            f"missing slices: a gap of {steps[i]:.3f} mm between {names[i]} and {names[i + 1]} where slices are "
            f"{median_step:.3f} mm apart (about {missing} slice(s) missing, {gaps.size} gap(s) in all)",
        )
    n = len(slices)
    sorted_pos = positions[order]
    step_vec = (sorted_pos[-1] - sorted_pos[0]) / (n - 1)
    expected = sorted_pos[0] + np.arange(n)[:, None] * step_vec
    deviation = np.linalg.norm(sorted_pos - expected, axis=1)
    worst = int(np.argmax(deviation))
    if deviation[worst] > SLICE_POSITION_TOLERANCE * median_step:
        raise AlqaInputError(
            folder,
            f"inconsistent slice spacing: {names[worst]} lies {deviation[worst]:.3f} mm off the regular "
            f"{median_step:.3f} mm grid of the other slices",
        )
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * ref.pixel_spacing_mm[1]  # i = column index, steps along a row
    affine_lps[:3, 1] = col_dir * ref.pixel_spacing_mm[0]  # j = row index, steps down a column
    affine_lps[:3, 2] = step_vec
    affine_lps[:3, 3] = sorted_pos[0]
    return order, LPS_TO_RAS @ affine_lps


def _decode(header: _Slice, ds: pydicom.Dataset) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError per plugin
        ts = UID(header.transfer_syntax) if header.transfer_syntax else None
        name = f"{ts.name} ({ts})" if ts is not None else "unknown transfer syntax"
        raise AlqaInputError(
            header.path, f"cannot decode pixel data in {name}: needs {codec_hint(str(ts or ''))} ({type(exc).__name__}: {exc})"
        ) from exc
    if pixels.shape != (header.rows, header.columns):
        raise AlqaInputError(header.path, f"decoded pixels have shape {pixels.shape}, header says {header.rows}x{header.columns}")
    return pixels


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> CTVolume:
    """Read one CT series from ``folder`` into HU on a RAS+ affine.

    ``series_uid`` picks one series when the folder holds several (which is an
    error without it). Raises :class:`AlqaInputError` on missing/empty folders,
    non-DICOM files, mixed series, missing slices, inconsistent geometry,
    undecodable pixel data and single slices.
    """
    folder = Path(folder)
    items = _group_by_series(folder, _read_folder(folder, need_pixels=True), series_uid)
    headers = [h for h, _ in items]
    _check_consistent(folder, headers)
    order, affine = _slice_order_and_affine(folder, headers)
    stored = np.stack([_decode(headers[i], items[i][1]) for i in order])  # (k, row, column)
    hu = stored.astype(np.float32)
    slopes = np.array([headers[i].slope for i in order], dtype=np.float32)[:, None, None]
    intercepts = np.array([headers[i].intercept for i in order], dtype=np.float32)[:, None, None]
    hu *= slopes
    hu += intercepts
    # (k, row, column) -> [i=column, j=row, k=slice]
    return CTVolume(np.ascontiguousarray(hu.transpose(2, 1, 0)), affine)


def read_dicom_grid(folder: str | Path, series_uid: str | None = None) -> Grid:
    """The grid :func:`read_dicom_series` would return, from headers only (no pixel decoding)."""
    folder = Path(folder)
    headers = [h for h, _ in _group_by_series(folder, _read_folder(folder, need_pixels=False), series_uid)]
    _check_consistent(folder, headers)
    _, affine = _slice_order_and_affine(folder, headers)
    return Grid((headers[0].columns, headers[0].rows, len(headers)), affine)


def list_dicom_series(folder: str | Path) -> tuple[DicomSeriesInfo, ...]:
    """Technical summary of every series in ``folder`` (headers only), sorted by UID."""
    folder = Path(folder)
    groups: dict[str, list[_Slice]] = {}
    for header, _ in _read_folder(folder, need_pixels=False):
        groups.setdefault(header.series_uid, []).append(header)
    out = []
    for uid, headers in sorted(groups.items()):
        ts = Counter(h.transfer_syntax for h in headers).most_common(1)[0][0]
        out.append(
            DicomSeriesInfo(
                series_uid=uid,
                modality=Counter(h.modality for h in headers).most_common(1)[0][0],
                n_slices=len(headers),
                rows=headers[0].rows,
                columns=headers[0].columns,
                transfer_syntax_uid=ts,
                transfer_syntax_name=UID(ts).name if ts else "",
            )
        )
    return tuple(out)


__all__ = [
    "DicomSeriesInfo",
    "LPS_TO_RAS",
    "MISSING_SLICE_FACTOR",
    "codec_hint",
    "list_dicom_series",
    "read_dicom_grid",
    "read_dicom_series",
]
