"""Attention maps of one case (003 §3.1, Eq. 1-4) from its ensemble's soft predictions.

Per organ c and voxel i, over the members that predict c:

- Eq. 1 inconsistency: population std of p across members;
- Eq. 2 uncertainty: mean across members of the entropy of p (see ``config``);
- Eq. 3 overlap: 1 where c is > 0.5 while another organ is > 0.5 in the same
  member; a one-hot member (an external label map) can never overlap itself,
  so for it another member's other organ > 0.5 at that voxel also counts;
- Eq. 4: inconsistency and uncertainty are binarised (``std > 0.1``,
  ``entropy > 0.05``) and cleaned in millimetres; the heatmap is
  ``std * [cleaned std mask] + entropy * [cleaned entropy mask] + overlap``,
  divided by its maximum over the organ (the public code's choices).

The heatmap is stored like a soft prediction: uint8 ``round(255 * h)``
(4x smaller than float32, and what the I/O and viewers already handle),
raised to at least 1 inside the attention region, so ``heatmap > 0`` is the
region exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np

from alqa_core.attention.cleaning import clean_voxels, ellipsoid_structure
from alqa_core.attention.kernel import organ_statistics
from alqa_core.attention.organ_stats import OrganStats
from alqa_core.attention.size import AttentionSize, organ_size, unscored_size
from alqa_core.config.sections import AttentionConfig
from alqa_core.errors import AlqaInputError
from alqa_core.volume import SoftPrediction, spacing_from_affine


@dataclass(frozen=True, eq=False)
class AttentionResult:
    """Per-organ attention heatmaps of one case and their sizes.

    ``heatmap``: uint8 (C, i, j, k), channel c is ``organs[c]``, values
    ``round(255 * h)`` with h in [0, 1] normalised per organ; read-only.
    """

    heatmap: np.ndarray
    affine: np.ndarray
    organs: tuple[str, ...]
    size: AttentionSize
    config: AttentionConfig

    def __post_init__(self):
        for name in ("heatmap", "affine"):
            arr = np.asarray(getattr(self, name))
            if arr.flags.writeable:
                arr = arr.view()
                arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    def organ_heatmap(self, organ: str) -> np.ndarray:
        return self.heatmap[self.organs.index(organ)]

    def region(self, organ: str) -> np.ndarray:
        """Bool (i, j, k): the organ's attention region."""
        return self.organ_heatmap(organ) > 0

    def to_soft_prediction(self, member: str = "attention") -> SoftPrediction:
        """The heatmap in the soft-prediction container, for ``write_soft_prediction``."""
        return SoftPrediction(self.heatmap, self.affine, self.organs, member)


def _bad(reason: str) -> AlqaInputError:
    return AlqaInputError(None, f"attention: {reason}")


def _coverage(member_organs, organs, n_members) -> np.ndarray:
    if member_organs is None:
        return np.ones((n_members, len(organs)), dtype=bool)
    if len(member_organs) != n_members:
        raise _bad(f"member_organs has {len(member_organs)} entries for {n_members} members")
    cov = np.zeros((n_members, len(organs)), dtype=bool)
    for m, names in enumerate(member_organs):
        unknown = sorted(set(names) - set(organs))
        if unknown:
            raise _bad(f"member {m} covers organs {unknown} that are not channels {list(organs)}")
        for name in names:
            cov[m, organs.index(name)] = True
    return cov


def _check_spacing(spacing_mm) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing_mm)
    except (TypeError, ValueError) as exc:
        raise _bad(f"spacing_mm must be 3 numbers, got {spacing_mm!r}") from exc
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise _bad(f"spacing_mm must be 3 positive numbers, got {spacing_mm!r}")
    return sp


def _organ_map(stats: OrganStats, shape, structure, config, spacing_mm):
    """The organ's attention region (distinct flat indices, any order) and its heatmap h in [0, 1]."""
    min_vox = config.min_component_ml * 1000.0 / float(np.prod(spacing_mm))

    def kept(flags: np.ndarray) -> np.ndarray:  # cleaned binary, aligned with the band
        out = np.zeros(stats.band.size, dtype=bool)
        idx = np.flatnonzero(flags)
        out[idx] = clean_voxels(stats.band[idx], shape, structure, restore=config.cleaning_restore, min_component_voxels=min_vox)
        return out

    h_band = np.where(kept(stats.inconsistent), stats.std, 0.0) + np.where(kept(stats.uncertain), stats.entropy, 0.0)
    overlap = stats.overlap
    if config.clean_overlap and overlap.size:
        overlap = overlap[clean_voxels(overlap, shape, structure, restore=config.cleaning_restore, min_component_voxels=min_vox)]
    pos = np.minimum(np.searchsorted(stats.band, overlap), max(stats.band.size - 1, 0))
    in_band = stats.band[pos] == overlap if stats.band.size else np.zeros(overlap.size, dtype=bool)
    h_band[pos[in_band]] += 1.0
    on = h_band > 0  # every component is > 0 where it is on (thresholds are >= 0)
    region = np.concatenate((stats.band[on], overlap[~in_band]))
    h = np.concatenate((h_band[on], np.ones(int((~in_band).sum()))))
    if region.size:
        h /= h.max()
    return region, h


def compute_attention(
    probabilities: np.ndarray,
    *,
    organs: Sequence[str],
    spacing_mm: Sequence[float],
    affine: np.ndarray | None = None,
    one_hot: Sequence[bool] | None = None,
    member_organs: Sequence[Collection[str]] | None = None,
    annotated_organs: Collection[str] = (),
    config: AttentionConfig = AttentionConfig(),
    case_id: str = "",
    dataset: str = "",
    backend: str = "auto",
    device: str | None = None,
) -> AttentionResult:
    """Attention maps from the stacked uint8 block (M, C, i, j, k) of M members' ``round(p * 255)``.

    ``member_organs[m]``: the organs member m predicts (default all); a
    member's other channels are ignored. ``one_hot[m]``: member m is a label
    map. ``annotated_organs``: organs the case's own dataset annotates; they
    get no attention unless ``config.score_annotated``. ``backend`` and
    ``device`` choose the Eq. 1-3 kernel (:func:`~alqa_core.attention.kernel.organ_statistics`;
    all give the same result). The input is not modified.
    """
    block = np.asarray(probabilities)
    if block.dtype != np.uint8 or block.ndim != 5:
        raise _bad(f"expected a uint8 (members, organs, i, j, k) block, got {block.dtype} {block.shape}")
    organs = tuple(organs)
    n_members, n_organs = block.shape[:2]
    if n_members < 1 or min(block.shape[2:]) < 1:
        raise _bad(f"empty block {block.shape}")
    if len(organs) != n_organs or len(set(organs)) != n_organs:
        raise _bad(f"{n_organs} channels need {n_organs} distinct organ names, got {list(organs)}")
    spacing = _check_spacing(spacing_mm)
    hot = np.zeros(n_members, dtype=bool) if one_hot is None else np.asarray(one_hot, dtype=bool)
    if hot.shape != (n_members,):
        raise _bad(f"one_hot needs {n_members} flags, got {list(one_hot)}")
    coverage = _coverage(member_organs, organs, n_members)
    annotated = set(annotated_organs)
    scored = [
        c for c in range(n_organs) if coverage[:, c].any() and (config.score_annotated or organs[c] not in annotated)
    ]
    shape = tuple(int(s) for s in block.shape[2:])
    block3 = np.ascontiguousarray(block).reshape(n_members, n_organs, -1)
    stats = organ_statistics(block3, coverage, hot, scored, config, backend=backend, device=device)

    structure = ellipsoid_structure(config.cleaning_radius_mm, spacing)
    heatmap = np.zeros((n_organs, block3.shape[2]), dtype=np.uint8)
    sizes = []
    for c, name in enumerate(organs):
        if c not in stats:
            sizes.append(unscored_size(name, shape[2]))
            continue
        region, h = _organ_map(stats[c], shape, structure, config, spacing)
        heatmap[c, region] = np.maximum(np.rint(h * 255.0), 1).astype(np.uint8)
        sizes.append(
            organ_size(
                name,
                scored=True,
                region_voxels=region,
                heat_sum=float(h.sum()),
                organ_voxels=stats[c].organ_voxels,
                shape=shape,
                spacing_mm=spacing,
                min_organ_ml=config.min_organ_ml,
            )
        )
    size = AttentionSize(case_id=case_id, dataset=dataset, spacing_mm=spacing, n_slices=shape[2], organs=tuple(sizes))
    aff = np.diag([*spacing, 1.0]) if affine is None else np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.allclose(spacing_from_affine(aff), spacing, atol=1e-3):
        raise _bad(f"affine {aff.tolist()} does not have spacing_mm {spacing}")
    return AttentionResult(heatmap.reshape((n_organs, *shape)), aff, organs, size, config)


def attention_from_predictions(
    predictions: Sequence[SoftPrediction],
    *,
    organs: Sequence[str] | None = None,
    one_hot: Sequence[bool] | None = None,
    annotated_organs: Collection[str] = (),
    config: AttentionConfig = AttentionConfig(),
    case_id: str = "",
    dataset: str = "",
    backend: str = "auto",
) -> AttentionResult:
    """:func:`compute_attention` from members' :class:`SoftPrediction` on one grid.

    Each member covers exactly the organs it has channels for. ``organs``
    (the output channels) defaults to every member's organs in order of
    first appearance. Grids must match (shape, and voxel centres within
    ``GRID_TOLERANCE_MM``); spacing and affine come from the first member.
    """
    if not predictions:
        raise _bad("no ensemble members given")
    first = predictions[0]
    for p in predictions[1:]:
        if not p.grid.matches(first.grid):
            raise AlqaInputError(
                p.member or None,
                f"attention: member {p.member!r} is on grid {p.grid.shape} {p.grid.spacing_mm} mm, "
                f"not on member {first.member!r}'s {first.grid.shape} {first.grid.spacing_mm} mm",
            )
    if organs is None:
        organs = tuple(dict.fromkeys(o for p in predictions for o in p.organs))
    organs = tuple(organs)
    block = np.zeros((len(predictions), len(organs), *first.grid.shape), dtype=np.uint8)
    member_organs = []
    for m, p in enumerate(predictions):
        mine = [o for o in p.organs if o in organs]
        for o in mine:
            block[m, organs.index(o)] = p.array[p.organs.index(o)]
        member_organs.append(mine)
    return compute_attention(
        block,
        organs=organs,
        spacing_mm=first.grid.spacing_mm,
        affine=first.affine,
        one_hot=one_hot,
        member_organs=member_organs,
        annotated_organs=annotated_organs,
        config=config,
        case_id=case_id,
        dataset=dataset,
        backend=backend,
    )
