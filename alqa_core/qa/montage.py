"""QA montages: every axial slice of a CT with the predicted organs overlaid, tiled into one picture.

001_e60473b22d13ca03.txt §2.3: the mask is "overlaid with its original input
image and decomposed into 2D slices; these slices were aligned into a single
montage image with the dimension 1344x1344", downsampled to 256x256 for the
ResNet-18 regressor. A human grades the 1344 px montage 0/1/2.

Layout (one convention, also used by :func:`montage_tensor`):

- input is a preprocessed volume, RAS ``(i, j, k)`` with values in [0, 1]
  (:mod:`alqa_core.ingest.preprocess`), and optionally a label map of organ-table
  values on the same grid;
- each axial slice ``k`` is shown in the radiological convention of
  :mod:`alqa_core.render`: patient's right on the image's left, anterior at
  the top (tile rows run anterior -> posterior, columns right -> left);
- tiles are square, ``S = max(n_i, n_j)`` voxels a side, the slice centred
  and padded with black, so a non-square slice keeps its aspect;
- tiles go row-major in increasing ``k`` (inferior -> superior) on a
  ``cols x cols`` grid with ``cols = ceil(sqrt(n_k))``; unused tiles are
  black, so the grid is square and resizing it to ``size_px`` square never
  distorts it;
- organs are alpha-blended (``alpha`` = 0.4, as :func:`render_overview`)
  in the fixed colour of :func:`alqa_core.render.color_lut`;
- in-plane voxels are assumed square (the preprocessed grid's spacing);
- the grid is resized with PIL's antialiased bilinear filter, which
  ``torch.nn.functional.interpolate(..., antialias=True)`` reproduces, so the
  differentiable :func:`montage_tensor` sees what the regressor was trained on.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image, UnidentifiedImageError

from alqa_core.config.sections import MONTAGE_PX, REGRESSOR_PX
from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable
from alqa_core.render import color_lut

OVERLAY_ALPHA = 0.4
# Slices blended at a time: bounds the float32 working memory on long scans.
_CHUNK_SLICES = 16
_RESAMPLE = Image.Resampling.BILINEAR  # antialiased when shrinking; torch's antialias=True matches it


@dataclass(frozen=True)
class MontageLayout:
    """Where each slice lands in a montage of a ``(n_i, n_j, n_k)`` volume."""

    n_slices: int
    cols: int
    tile_vox: int  # S: a tile's edge in voxels (the padded slice)
    slice_hw_vox: tuple[int, int]  # the displayed slice: (rows = n_j, cols = n_i)
    size_px: int

    @property
    def px_per_vox(self) -> float:
        return self.size_px / (self.cols * self.tile_vox)

    def tile_of(self, k: int) -> tuple[int, int]:
        """(row, col) of axial slice ``k`` in the grid."""
        if not 0 <= k < self.n_slices:
            raise IndexError(f"slice {k} out of range [0, {self.n_slices})")
        return divmod(int(k), self.cols)

    def slice_box_px(self, k: int) -> tuple[float, float, float, float]:
        """(top, left, bottom, right) in montage pixels of slice ``k``'s image (padding excluded)."""
        row, col = self.tile_of(k)
        h, w = self.slice_hw_vox
        top = row * self.tile_vox + (self.tile_vox - h) // 2
        left = col * self.tile_vox + (self.tile_vox - w) // 2
        s = self.px_per_vox
        return (top * s, left * s, (top + h) * s, (left + w) * s)


def montage_layout(shape_ijk: tuple[int, int, int], size_px: int = MONTAGE_PX) -> MontageLayout:
    if len(shape_ijk) != 3 or min(shape_ijk) < 1:
        raise AlqaInputError(None, f"montage: need a non-empty 3D volume (i, j, k), got shape {tuple(shape_ijk)}")
    if isinstance(size_px, bool) or int(size_px) != size_px or size_px < 1:
        raise AlqaInputError(None, f"montage: size_px must be a positive integer, got {size_px!r}")
    n_i, n_j, n_k = (int(n) for n in shape_ijk)
    return MontageLayout(n_k, math.ceil(math.sqrt(n_k)), max(n_i, n_j), (n_j, n_i), int(size_px))


def _display_stack(volume: np.ndarray) -> np.ndarray:
    """RAS (i, j, k) -> (k, rows, cols): rows anterior..posterior, cols patient right..left.

    The same map as ``alqa_core.render._display`` applied to every slice.
    """
    return volume[::-1, ::-1, :].transpose(2, 1, 0)


def _check_inputs(ct01: np.ndarray, label: np.ndarray | None, table: OrganTable) -> tuple[np.ndarray, np.ndarray | None]:
    ct = np.asarray(ct01)
    if ct.ndim != 3:
        raise AlqaInputError(None, f"montage: CT must be 3D (i, j, k), got shape {ct.shape}")
    if not np.issubdtype(ct.dtype, np.floating) or not np.all(np.isfinite(ct)):
        raise AlqaInputError(None, f"montage: CT must be finite floats in [0, 1] (preprocessed), got dtype {ct.dtype}")
    if label is None:
        return ct, None
    lab = np.asarray(label)
    if lab.shape != ct.shape:
        raise AlqaInputError(None, f"montage: label shape {lab.shape} differs from the CT's {ct.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise AlqaInputError(None, f"montage: label must hold integer organ-table values, got dtype {lab.dtype}")
    known = np.zeros(table.max_value + 1, dtype=bool)
    known[[0, *table.values]] = True
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi > table.max_value or not np.all(known[lab]):
        bad = sorted(set(np.unique(lab).tolist()) - {0, *table.values})
        raise AlqaInputError(None, f"montage: label values {bad[:10]} are not in the organ table {table.values}")
    return ct, lab


def _resize(rgb: np.ndarray, size_px: int) -> np.ndarray:
    if rgb.shape[:2] == (size_px, size_px):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size_px, size_px), _RESAMPLE))


def qa_montage(
    ct01: np.ndarray,
    label: np.ndarray | None,
    table: OrganTable,
    size_px: int = MONTAGE_PX,
    *,
    alpha: float = OVERLAY_ALPHA,
) -> np.ndarray:
    """uint8 ``(size_px, size_px, 3)``: all axial slices with organs overlaid (module doc for the layout)."""
    ct, lab = _check_inputs(ct01, label, table)
    if not 0.0 <= alpha <= 1.0:
        raise AlqaInputError(None, f"montage: alpha must be in [0, 1], got {alpha}")
    layout = montage_layout(ct.shape, size_px)
    s, (h, w) = layout.tile_vox, layout.slice_hw_vox
    top, left = (s - h) // 2, (s - w) // 2
    lut = color_lut(table).astype(np.float32)
    gray = _display_stack(ct)
    labels = None if lab is None else _display_stack(lab)
    tiles = np.zeros((layout.cols * layout.cols, s, s, 3), dtype=np.uint8)
    for k0 in range(0, layout.n_slices, _CHUNK_SLICES):  # chunks of slices, vectorised within each
        k1 = min(k0 + _CHUNK_SLICES, layout.n_slices)
        rgb = np.repeat(np.clip(gray[k0:k1], 0.0, 1.0).astype(np.float32)[..., None] * 255.0, 3, axis=-1)
        if labels is not None:
            chunk = labels[k0:k1]
            inside = chunk > 0
            rgb[inside] = (1.0 - alpha) * rgb[inside] + alpha * lut[chunk[inside]]
        tiles[k0:k1, top : top + h, left : left + w] = np.rint(rgb).astype(np.uint8)
    grid = rearrange(tiles, "(r c) h w ch -> (r h) (c w) ch", c=layout.cols)
    return _resize(np.ascontiguousarray(grid), layout.size_px)


def downsample(montage: np.ndarray, size_px: int = REGRESSOR_PX) -> np.ndarray:
    """uint8 ``(size_px, size_px, 3)``: the montage shrunk with PIL's antialiased bilinear filter."""
    m = _check_montage(montage)
    if m.shape[0] != m.shape[1]:
        raise AlqaInputError(None, f"montage must be square, got {m.shape[:2]}")
    return _resize(m, int(size_px))


def _check_montage(montage: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    m = np.asarray(montage)
    if m.ndim != 3 or m.shape[2] != 3 or m.dtype != np.uint8:
        raise AlqaInputError(path, f"a montage is uint8 (H, W, 3), got {m.dtype} {m.shape}")
    return m


def montage_png(montage: np.ndarray) -> bytes:
    """PNG bytes of a montage (write them with :func:`alqa_core.io.atomic.atomic_write_bytes`)."""
    buf = io.BytesIO()
    Image.fromarray(_check_montage(montage)).save(buf, format="PNG")
    return buf.getvalue()


def read_montage_png(path: str | Path) -> np.ndarray:
    """uint8 ``(H, W, 3)`` from a montage PNG; AlqaInputError for a missing or unreadable file."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError as exc:
        raise AlqaInputError(path, "montage PNG does not exist") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise AlqaInputError(path, f"not a readable PNG ({type(exc).__name__}: {exc})") from exc


# ----------------------------------------------------------------- torch path


def montage_tensor(
    ct01: torch.Tensor,
    probabilities: torch.Tensor,
    table: OrganTable,
    size_px: int = REGRESSOR_PX,
    *,
    via_px: int | None = MONTAGE_PX,
    alpha: float = OVERLAY_ALPHA,
) -> torch.Tensor:
    """Differentiable montage, float ``(3, size_px, size_px)`` in [0, 1] (001 §2: QA as a loss).

    ``ct01``: ``(i, j, k)`` RAS in [0, 1]; ``probabilities``: ``(n_organs, i, j, k)``,
    channel ``c`` = ``table.organs[c]`` (per-organ sigmoid heads, as
    :mod:`alqa_core.ensemble.networks`). Soft overlay: with ``w_c = p_c / max(1, sum_c p_c)``
    the colour is ``(1 - alpha * sum_c w_c) * gray + alpha * sum_c w_c * colour_c``,
    which for one-hot probabilities is exactly :func:`qa_montage`'s hard overlay.
    The grid goes to ``via_px`` then to ``size_px``, as ``downsample(qa_montage(...))``
    does (``via_px=None`` resizes once). Gradients flow to both inputs.
    """
    if ct01.ndim != 3 or probabilities.ndim != 4 or probabilities.shape[1:] != ct01.shape:
        raise AlqaInputError(
            None, f"montage_tensor: need ct (i, j, k) and probabilities (C, i, j, k), got {tuple(ct01.shape)} and {tuple(probabilities.shape)}"
        )
    if probabilities.shape[0] != len(table):
        raise AlqaInputError(None, f"montage_tensor: {probabilities.shape[0]} channels but {len(table)} organs in the table")
    layout = montage_layout(tuple(ct01.shape), size_px)
    s, (h, w) = layout.tile_vox, layout.slice_hw_vox
    colors = torch.as_tensor(color_lut(table)[list(table.values)], dtype=ct01.dtype, device=ct01.device) / 255.0
    gray = ct01.clamp(0, 1).flip(0, 1).permute(2, 1, 0)  # (k, rows, cols), as _display_stack
    p = probabilities.flip(1, 2).permute(0, 3, 2, 1)  # (C, k, rows, cols)
    weights = p / p.sum(0, keepdim=True).clamp(min=1.0)
    overlay = torch.einsum("ckhw,cx->xkhw", weights, colors)  # (3, k, rows, cols)
    rgb = (1.0 - alpha * weights.sum(0)) * gray + alpha * overlay
    top, left = (s - h) // 2, (s - w) // 2
    n_blank = layout.cols * layout.cols - layout.n_slices
    rgb = F.pad(rgb, (left, s - w - left, top, s - h - top, 0, n_blank))
    grid = rearrange(rgb, "ch (r c) h w -> 1 ch (r h) (c w)", c=layout.cols)
    for edge in ((via_px,) if via_px else ()) + (int(size_px),):
        if grid.shape[-1] != edge:
            grid = F.interpolate(grid, size=(edge, edge), mode="bilinear", align_corners=False, antialias=True)
    return grid[0].clamp(0, 1)


__all__ = [
    "OVERLAY_ALPHA",
    "MontageLayout",
    "downsample",
    "montage_layout",
    "montage_png",
    "montage_tensor",
    "qa_montage",
    "read_montage_png",
]
