"""NIfTI read/write through nibabel, validated on read and atomic on write."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.io.atomic import atomic_path
from alqa_core.volume import CTVolume, Grid, LabelMap, SoftPrediction

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _why_unreadable(path: Path, exc: Exception) -> str:
    """Tell a truncated gzip from a file that is not NIfTI at all."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as gz:
            return f"truncated or corrupt gzip ({gz})"
    return f"not a NIfTI image ({exc})"


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    """Load header + data fully, turning every failure into AlqaInputError."""
    if not path.exists():
        raise AlqaInputError(path, "file does not exist")
    if not path.is_file():
        raise AlqaInputError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AlqaInputError(path, "file is empty")
    try:
        img = nib.load(str(path))
    except nib.filebasedimages.ImageFileError as exc:
        raise AlqaInputError(path, _why_unreadable(path, exc)) from exc
    except (gzip.BadGzipFile, zlib.error, EOFError, OSError) as exc:
        raise AlqaInputError(path, f"corrupt or truncated file ({exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise AlqaInputError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    try:
        data = np.asanyarray(img.dataobj)
    except (gzip.BadGzipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise AlqaInputError(path, f"corrupt or truncated image data ({exc})") from exc
    affine = img.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise AlqaInputError(path, f"invalid affine (singular or not finite): {affine!r}")
    return data, np.asarray(affine, dtype=np.float64), img


def read_grid(path: str | Path) -> Grid:
    """The grid (shape, affine) of a 3D NIfTI from its header alone; the voxels are not read."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise AlqaInputError(path, "file does not exist or is empty")
    try:
        img = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, gzip.BadGzipFile, zlib.error, EOFError, OSError) as exc:
        raise AlqaInputError(path, f"not a readable NIfTI image ({exc})") from exc
    shape = tuple(int(s) for s in img.shape[:3])
    if len(img.shape) < 3:
        raise AlqaInputError(path, f"expected a 3D volume, got shape {img.shape}")
    return Grid(shape, np.asarray(img.affine, dtype=np.float64))


def _squeeze_to_3d(path: Path, data: np.ndarray) -> np.ndarray:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise AlqaInputError(path, f"expected a 3D volume, got {data.ndim}D with shape {tuple(data.shape)}")
    if min(data.shape) < 1:
        raise AlqaInputError(path, f"empty volume with shape {tuple(data.shape)}")
    return data


def read_ct(path: str | Path) -> CTVolume:
    """Read a 3D CT in HU. Raises AlqaInputError on anything unusable."""
    path = Path(path)
    data, affine, _ = _load(path)
    data = _squeeze_to_3d(path, data)
    if not (np.issubdtype(data.dtype, np.number)):
        raise AlqaInputError(path, f"non-numeric voxel type {data.dtype}")
    arr = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        n = int(np.count_nonzero(~np.isfinite(arr)))
        raise AlqaInputError(path, f"{n} voxels are NaN or infinite")
    return CTVolume(arr, affine)


def integral_labels(data: np.ndarray, path) -> np.ndarray:
    """Label values as integers: integral floats are accepted, NaN, fractions and negatives are not."""
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise AlqaInputError(path, "label map contains NaN or infinite values")
        if not np.all(data == np.round(data)):
            raise AlqaInputError(path, "label map has non-integer (float) values")
        data = data.astype(np.int32)
    elif not np.issubdtype(data.dtype, np.integer):
        raise AlqaInputError(path, f"label map has non-integer voxel type {data.dtype}")
    if data.size and data.min() < 0:
        raise AlqaInputError(path, f"label map has negative values (min {int(data.min())})")
    return data


def read_label(path: str | Path, class_map_name: str = "organ_table") -> LabelMap:
    """Read a 3D integer label map. Float data is accepted only if it is integral."""
    path = Path(path)
    data, affine, _ = _load(path)
    data = integral_labels(_squeeze_to_3d(path, data), path)
    top = int(data.max()) if data.size else 0
    dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int32
    return LabelMap(np.asarray(data, dtype=dtype), affine, class_map_name)


def read_nifti_array(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Any-dimensional validated read: (array, affine). For 4D probability maps."""
    path = Path(path)
    data, affine, _ = _load(path)
    arr = np.asarray(data)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise AlqaInputError(path, "image contains NaN or infinite values")
    return arr, affine


def _header(affine: np.ndarray, dtype) -> nib.Nifti1Header:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr["descrip"] = b"alqa"  # never carry over a source description (may hold PHI)
    hdr.set_xyzt_units("mm", "sec")
    return hdr


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``array`` (3D or 4D, channels last for 4D) atomically; returns ``path``."""
    arr = np.asarray(array)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64), header=_header(affine, arr.dtype))
    img.set_qform(np.asarray(affine), code=1)
    img.set_sform(np.asarray(affine), code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def write_ct(path: str | Path, volume: CTVolume, dtype=np.int16) -> Path:
    """Write a CT; HU are stored as int16 by default (rounded)."""
    arr = np.asarray(volume.array)
    if np.issubdtype(np.dtype(dtype), np.integer):
        arr = np.clip(np.rint(arr), np.iinfo(dtype).min, np.iinfo(dtype).max)
    return write_nifti(path, arr.astype(dtype), volume.affine)


def write_label(path: str | Path, label: LabelMap) -> Path:
    return write_nifti(path, np.asarray(label.array), label.affine)


def write_soft_prediction(path: str | Path, pred: SoftPrediction) -> Path:
    """Store (C, i, j, k) uint8 as a 4D NIfTI with channels last (i, j, k, C)."""
    return write_nifti(path, np.moveaxis(np.asarray(pred.array), 0, -1), pred.affine)


def read_soft_prediction(path: str | Path, organs: tuple[str, ...], member: str = "") -> SoftPrediction:
    path = Path(path)
    arr, affine = read_nifti_array(path)
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise AlqaInputError(path, f"expected a uint8 4D soft prediction, got {arr.dtype} {arr.shape}")
    if arr.shape[3] != len(organs):
        raise AlqaInputError(path, f"soft prediction has {arr.shape[3]} channels, expected {len(organs)}")
    return SoftPrediction(np.ascontiguousarray(np.moveaxis(arr, -1, 0)), affine, tuple(organs), member)
