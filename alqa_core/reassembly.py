"""Label reassembly with provenance (step 6 of the loop, 003 §3.2).

Three functions, used in this order for one case:

1. :func:`pseudo_label` -- the ensemble's label: per organ, the MEAN of the
   members' sigmoid probabilities (only over the members that cover that
   organ), then the argmax over organs, background where the best mean is
   below ``threshold``. Averaging architectures reduces label bias (003 §4.1,
   "Evaluation of label bias").
2. :func:`select_revision` -- when several accepted submissions exist for a
   case, the documented rule **"latest accepted wins"**: the largest
   ``submitted_at``, ties broken by the largest ``submission_id``
   (lexicographic). It is a pure function of its input set, so the order in
   which a sensor saw the submissions never matters.
3. :func:`reassemble` -- per organ, the label priority **original (dataset) >
   revised (annotator) > pseudo**. A *confirmation* says the pseudo label is
   right: the voxels come from the pseudo label, the provenance says
   ``confirmed`` and records who and when.

Painting: each organ's mask comes from its chosen source; organs are painted
lowest priority first (pseudo, then confirmed/revised, then original), so
where two sources' masks collide the higher-priority source wins. An organ
the original dataset annotates is authoritative: where the original does not
mark it, it is absent, whatever the pseudo label says.

All label maps are in organ-table numbering (after
:func:`alqa_core.organs.remap_labels`, or :func:`remap_labels_splitting_kidney`
for sources that label only a generic ``kidney``).

Generic kidney: :func:`split_kidney` splits a both-kidneys mask into the
patient's right and left kidney. World coordinates follow nibabel's RAS+
(``nibabel.orientations.ornt2axcodes``: the x axis runs from L to R), so the
patient's right kidney has the LARGER world x, whatever the voxel axes'
orientation (RAS, LPS, ...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

from alqa_core.errors import AlqaInputError
from alqa_core.organs import ClassMap, OrganTable, canonical_organ_name, remap_labels
from alqa_core.volume import Grid, LabelMap, SoftPrediction

log = logging.getLogger(__name__)

Source = Literal["original", "revised", "confirmed", "pseudo"]
RevisionKind = Literal["revised", "confirmed"]

#: Paint order: a higher rank is painted later and wins where masks collide.
SOURCE_RANK = {"pseudo": 0, "confirmed": 1, "revised": 1, "original": 2}

#: The rule :func:`select_revision` implements, recorded with the provenance.
REVISION_RULE = "latest_accepted_wins"

#: Names a source may use for both kidneys in one label.
GENERIC_KIDNEY_NAMES = ("kidney", "kidneys")


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Revision:
    """One accepted annotator submission for a case.

    ``kind="revised"`` needs ``label`` (organ-table numbering, the case's
    original grid). ``kind="confirmed"`` means the pseudo label is right; its
    ``label`` is optional and ignored. ``organs`` are the organs the
    submission covers; ``None`` means every organ of the table.
    """

    label: LabelMap | None
    submission_id: str
    annotator: str
    submitted_at: datetime
    kind: RevisionKind = "revised"
    organs: tuple[str, ...] | None = None

    def __post_init__(self):
        where = f"submission {self.submission_id!r}"
        if not self.submission_id:
            raise AlqaInputError(where, "submission_id is empty")
        if self.kind not in ("revised", "confirmed"):
            raise AlqaInputError(where, f"kind must be 'revised' or 'confirmed', got {self.kind!r}")
        if not isinstance(self.submitted_at, datetime) or self.submitted_at.utcoffset() is None:
            raise AlqaInputError(where, f"submitted_at must be a timezone-aware datetime, got {self.submitted_at!r}")
        if self.kind == "revised" and self.label is None:
            raise AlqaInputError(where, "a revised submission needs a label map")
        if self.organs is not None:
            object.__setattr__(self, "organs", tuple(canonical_organ_name(o) for o in self.organs))


@dataclass(frozen=True)
class OrganProvenance:
    """Where one organ of one reassembled label came from."""

    case_id: str
    organ: str
    source: Source
    submission_id: str | None
    annotator: str | None
    submitted_at: datetime | None
    #: voxels of this organ in the reassembled label (after collisions)
    voxels: int
    #: other accepted submissions for the case that the revision rule set aside
    superseded: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class ReassembledLabel:
    label: LabelMap
    provenance: tuple[OrganProvenance, ...]

    def to_records(self) -> list[dict]:
        """One row per organ for the catalog's ``provenance`` table.

        ``superseded`` is a comma-joined string (never a list), so every
        Parquet partition has the same column type even when it is empty.
        """
        return [
            {
                "case_id": p.case_id,
                "organ": p.organ,
                "source": p.source,
                "submission_id": p.submission_id,
                "annotator": p.annotator,
                "submitted_at": p.submitted_at,
                "voxels": p.voxels,
                "volume_ml": p.voxels * self.label.voxel_volume_ml,
                "revision_rule": REVISION_RULE if p.submission_id is not None else None,
                "superseded": ",".join(p.superseded),
            }
            for p in self.provenance
        ]

    def source_of(self, organ: str) -> Source:
        key = canonical_organ_name(organ)
        for p in self.provenance:
            if p.organ == key:
                return p.source
        raise KeyError(f"organ {organ!r} has no provenance; organs: {[p.organ for p in self.provenance]}")


# --------------------------------------------------------------------------
# Pseudo label
# --------------------------------------------------------------------------


def _check_grid(reference: Grid, grid: Grid, what: str, ref_what: str) -> None:
    if not reference.matches(grid):
        raise AlqaInputError(
            what,
            f"grid {tuple(grid.shape)} with affine {np.round(grid.affine, 3).tolist()} differs from "
            f"{ref_what}'s {tuple(reference.shape)} with affine {np.round(reference.affine, 3).tolist()}",
        )


def pseudo_label(
    members: Sequence[SoftPrediction],
    table: OrganTable,
    threshold: float = 0.5,
    covered: Sequence[Sequence[str] | None] | None = None,
) -> LabelMap:
    """Argmax over organs of the ensemble-mean sigmoid probability.

    ``covered[m]`` lists the organs member ``m`` really predicts (``None``:
    all its channels). An organ's mean is taken over the members covering it
    only; an organ no member covers never appears. Channels for organs the
    table lacks are ignored. Ties go to the organ with the lower table value
    (``numpy.argmax`` semantics). Background where the best mean ``<
    threshold``. All members must share one grid.
    """
    if not members:
        raise AlqaInputError(None, "pseudo_label needs at least one ensemble member")
    if covered is not None and len(covered) != len(members):
        raise ValueError(f"covered has {len(covered)} entries for {len(members)} members")
    ref = members[0].grid
    ref_name = f"soft prediction of member {members[0].member!r}"
    cover: list[frozenset[str]] = []
    for m, member in enumerate(members):
        name = f"soft prediction of member {member.member!r}"
        _check_grid(ref, member.grid, name, ref_name)
        organs = frozenset(member.organs) if covered is None or covered[m] is None else frozenset(
            canonical_organ_name(o) for o in covered[m]
        )
        unknown = organs - set(member.organs)
        if unknown:
            raise AlqaInputError(name, f"covers {sorted(unknown)} but has no channel for them: {member.organs}")
        cover.append(organs)

    shape = tuple(ref.shape)
    best = np.full(shape, -1.0, dtype=np.float32)
    best_value = np.zeros(shape, dtype=np.uint8)
    # One organ at a time into preallocated buffers, so memory stays at a few
    # volumes whatever the number of organs and members (a (C, i, j, k) float
    # stack would not); copyto(where=) avoids boolean-index copies.
    mean = np.empty(shape, dtype=np.float32)
    better = np.empty(shape, dtype=bool)
    for organ in table.organs:
        users = [mem for mem, cov in zip(members, cover) if organ.name in cov]
        if not users:
            log.info("pseudo_label: no member covers %s; it is left out", organ.name)
            continue
        total = np.zeros(shape, dtype=np.uint16 if len(users) <= 257 else np.uint32)
        for mem in users:
            np.add(total, mem.array[mem.organs.index(organ.name)], out=total)
        np.multiply(total, np.float32(1.0 / (255.0 * len(users))), out=mean)
        np.greater(mean, best, out=better)
        np.copyto(best, mean, where=better)
        np.copyto(best_value, np.uint8(organ.value), where=better)
    np.copyto(best_value, np.uint8(0), where=best < np.float32(threshold))
    return LabelMap(best_value, ref.affine)


# --------------------------------------------------------------------------
# Revisions
# --------------------------------------------------------------------------


def select_revision(revisions: Sequence[Revision]) -> Revision:
    """The rule "latest accepted wins": max ``submitted_at``, ties by max ``submission_id``.

    ``revisions`` are the accepted submissions for ONE case (rejected ones
    never become revisions). Deterministic and independent of input order.
    """
    if not revisions:
        raise ValueError("select_revision needs at least one revision")
    return max(revisions, key=lambda r: (r.submitted_at, r.submission_id))


def _organ_set(table: OrganTable, organs: Sequence[str] | None, what: str) -> tuple[str, ...]:
    if organs is None:
        return table.names
    names = tuple(canonical_organ_name(o) for o in organs)
    unknown = [o for o in names if o not in table.names]
    if unknown:
        raise AlqaInputError(what, f"organs {unknown} are not in the organ table {table.names}")
    return names


def reassemble(
    case_id: str,
    table: OrganTable,
    pseudo: LabelMap,
    original: LabelMap | None,
    original_organs: Sequence[str],
    revision: Revision | Sequence[Revision] | None,
) -> ReassembledLabel:
    """Merge one case's labels by the priority original > revised > pseudo.

    ``original_organs`` are the organs the source dataset annotates (its
    ``dataset.json`` labels); ``original`` may be ``None`` only when that is
    empty. ``revision`` may be one accepted submission or several, in which
    case :func:`select_revision` picks one and the others are recorded as
    ``superseded``. Nothing is mutated; grids must all match.
    """
    where = f"case {case_id!r}"
    orig_names = _organ_set(table, original_organs, f"{where} original label")
    if orig_names and original is None:
        raise AlqaInputError(f"{where} original label", f"original annotates {list(orig_names)} but no label was given")
    if original is not None:
        _check_grid(pseudo.grid, original.grid, f"{where} original label", "the pseudo label")

    superseded: tuple[str, ...] = ()
    if revision is not None and not isinstance(revision, Revision):
        candidates = tuple(revision)
        revision = select_revision(candidates) if candidates else None
        if revision is not None:
            superseded = tuple(sorted(r.submission_id for r in candidates if r is not revision))
    rev_names: tuple[str, ...] = ()
    if revision is not None:
        rev_where = f"{where} submission {revision.submission_id!r}"
        rev_names = _organ_set(table, revision.organs, rev_where)
        if revision.kind == "revised":
            _check_grid(pseudo.grid, revision.label.grid, rev_where, "the pseudo label")

    choices: list[tuple[str, Source, np.ndarray]] = []
    for organ in table.organs:
        if organ.name in orig_names:
            source, array = "original", original.array
        elif organ.name in rev_names:
            source = revision.kind
            array = revision.label.array if revision.kind == "revised" else pseudo.array
        else:
            source, array = "pseudo", pseudo.array
        choices.append((organ.name, source, array))

    out = np.zeros(tuple(pseudo.shape), dtype=np.uint8)
    # stable sort: within one rank organs keep table order
    for name, source, array in sorted(choices, key=lambda c: SOURCE_RANK[c[1]]):
        value = table.value_of(name)
        np.copyto(out, np.uint8(value), where=array == value)

    counts = np.bincount(out.ravel(), minlength=table.max_value + 1)
    provenance = []
    for name, source, _ in choices:
        from_rev = source in ("revised", "confirmed")
        provenance.append(
            OrganProvenance(
                case_id=case_id,
                organ=name,
                source=source,
                submission_id=revision.submission_id if from_rev else None,
                annotator=revision.annotator if from_rev else None,
                submitted_at=revision.submitted_at if from_rev else None,
                voxels=int(counts[table.value_of(name)]),
                superseded=superseded if from_rev else (),
            )
        )
    return ReassembledLabel(LabelMap(out, pseudo.affine), tuple(provenance))


# --------------------------------------------------------------------------
# Generic kidney
# --------------------------------------------------------------------------


def _world_x_mm(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    """RAS x (mm) of voxel indices ``index`` (shape (n, 3))."""
    a = np.asarray(affine, dtype=np.float64)
    return index @ a[0, :3] + a[0, 3]


def split_kidney(
    mask: np.ndarray,
    affine: np.ndarray,
    body_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a both-kidneys mask into ``(right, left)`` (the patient's sides).

    Midline (a world x in mm): the x centroid of ``body_mask`` when given;
    else halfway between the x centroids of the two largest connected
    components (26-connectivity); with a single component and no body mask,
    the x centre of the field of view (CT fields of view are centred on the
    body). Each component that lies wholly on one side of the midline goes
    to that side whole; a component straddling it (a horseshoe kidney) is cut
    voxel-wise at the midline. RAS+: larger x is the patient's right.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"split_kidney needs a 3D mask, got shape {m.shape}")
    right = np.zeros(m.shape, dtype=bool)
    left = np.zeros(m.shape, dtype=bool)
    if not m.any():
        return right, left
    components, n = ndimage.label(m, structure=ndimage.generate_binary_structure(3, 3))
    index = np.argwhere(m)
    x = _world_x_mm(affine, index.astype(np.float64))
    comp_of = components[m]  # same (C) order as argwhere

    if body_mask is not None:
        body = np.asarray(body_mask, dtype=bool)
        if body.shape != m.shape or not body.any():
            raise ValueError(f"body_mask must be a non-empty mask of shape {m.shape}, got {body.shape}")
        midline = float(_world_x_mm(affine, np.argwhere(body).astype(np.float64)).mean())
    elif n >= 2:
        sizes = np.bincount(comp_of, minlength=n + 1)
        largest = np.argsort(sizes[1:])[::-1][:2] + 1
        sums = np.bincount(comp_of, weights=x, minlength=n + 1)
        midline = float(np.mean(sums[largest] / sizes[largest]))
    else:
        centre = (np.asarray(m.shape, dtype=np.float64) - 1.0) / 2.0
        midline = float(_world_x_mm(affine, centre[None, :])[0])

    is_right = x > midline
    right_count = np.bincount(comp_of, weights=is_right, minlength=n + 1)
    total = np.bincount(comp_of, minlength=n + 1)
    whole_right = right_count == total  # per component
    whole_left = right_count == 0
    voxel_right = np.where(whole_right[comp_of], True, np.where(whole_left[comp_of], False, is_right))
    ii, jj, kk = index.T
    right[ii[voxel_right], jj[voxel_right], kk[voxel_right]] = True
    left[ii[~voxel_right], jj[~voxel_right], kk[~voxel_right]] = True
    return right, left


def split_kidney_values(
    labels: np.ndarray,
    affine: np.ndarray,
    kidney_value: int,
    right_value: int,
    left_value: int,
    body_mask: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``labels`` with ``kidney_value`` replaced by right/left values."""
    arr = np.asarray(labels)
    right, left = split_kidney(arr == kidney_value, affine, body_mask)
    out = arr.copy()
    out[right] = right_value
    out[left] = left_value
    return out


def remap_labels_splitting_kidney(
    label: LabelMap,
    class_map: ClassMap,
    table: OrganTable,
    body_mask: np.ndarray | None = None,
) -> LabelMap:
    """Remap a source label onto ``table``, splitting a generic ``kidney``.

    Like :func:`alqa_core.organs.remap_labels`, plus: source values the class
    map names ``kidney``/``kidneys`` become the table's ``kidney_right`` and
    ``kidney_left`` via :func:`split_kidney`. Returns a LabelMap in
    organ-table numbering on the same grid.
    """
    source = np.asarray(label.array)
    out = remap_labels(source, class_map, table).array.copy()
    generic = [v for v, name in class_map.source_to_organ.items() if name in GENERIC_KIDNEY_NAMES]
    if generic:
        right, left = split_kidney(np.isin(source, generic), label.affine, body_mask)
        out[right] = table.value_of("kidney_right")
        out[left] = table.value_of("kidney_left")
    return LabelMap(out, label.affine)


__all__ = [
    "GENERIC_KIDNEY_NAMES",
    "REVISION_RULE",
    "OrganProvenance",
    "ReassembledLabel",
    "Revision",
    "pseudo_label",
    "reassemble",
    "remap_labels_splitting_kidney",
    "select_revision",
    "split_kidney",
    "split_kidney_values",
]
