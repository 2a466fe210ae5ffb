"""Label reassembly with provenance (step 6 of the loop, 003 §3.2).

The pseudo label (:func:`alqa_core.ensemble.pseudo_labels`: per organ the
mean of the members' sigmoid probabilities, then the argmax) comes first;
then, for one case:

1. :func:`select_revision` -- when several accepted submissions exist for a
   case, the documented rule **"latest accepted wins"**: the largest
   ``submitted_at``, ties broken by the largest ``submission_id``
   (lexicographic). It is a pure function of its input set, so the order in
   which a sensor saw the submissions never matters.
2. :func:`reassemble` -- per organ, the label priority **original (dataset) >
   revised (annotator) > pseudo**. A *confirmation* says the pseudo label is
   right: the voxels come from the pseudo label, the provenance says
   ``confirmed`` and records who and when.

Painting: each organ's mask comes from its chosen source; organs are painted
lowest priority first (pseudo, then confirmed/revised, then original), so
where two sources' masks collide the higher-priority source wins. An organ
the original dataset annotates is authoritative: where the original does not
mark it, it is absent, whatever the pseudo label says.

All label maps are in organ-table numbering (after
:func:`alqa_core.organs.remap_labels`, or
:func:`alqa_core.ingest.remap_labels_splitting_kidney` for sources that label
only a generic ``kidney``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Sequence

import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_label, write_label
from alqa_core.organs import OrganTable, canonical_organ_name
from alqa_core.volume import LabelMap, require_same_grid
from alqa_core.workspace import WorkspaceLayout

Source = Literal["original", "revised", "confirmed", "pseudo"]
RevisionKind = Literal["revised", "confirmed"]

#: Paint order: a higher rank is painted later and wins where masks collide.
SOURCE_RANK = {"pseudo": 0, "confirmed": 1, "revised": 1, "original": 2}

#: The rule :func:`select_revision` implements, recorded with the provenance.
REVISION_RULE = "latest_accepted_wins"


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
    #: other accepted submissions of the case this one was chosen over (when it was chosen)
    superseded: tuple[str, ...] = ()

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
    #: the model round whose pseudo label filled the unreviewed organs (-1: not recorded)
    pseudo_round: int = -1

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
                "pseudo_round": int(self.pseudo_round),
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
    ``superseded`` (one revision carries its own ``superseded``). Nothing is
    mutated; grids must all match.
    """
    where = f"case {case_id!r}"
    orig_names = _organ_set(table, original_organs, f"{where} original label")
    if orig_names and original is None:
        raise AlqaInputError(f"{where} original label", f"original annotates {list(orig_names)} but no label was given")
    if original is not None:
        require_same_grid(pseudo.grid, original.grid, f"{where} original label", "the pseudo label")

    candidates = (revision,) if isinstance(revision, Revision) else tuple(revision or ())
    revision = select_revision(candidates) if candidates else None
    superseded: tuple[str, ...] = ()
    if revision is not None:
        superseded = tuple(sorted(set(revision.superseded) | {r.submission_id for r in candidates if r is not revision}))
    rev_names: tuple[str, ...] = ()
    if revision is not None:
        rev_where = f"{where} submission {revision.submission_id!r}"
        rev_names = _organ_set(table, revision.organs, rev_where)
        if revision.label is not None:
            require_same_grid(pseudo.grid, revision.label.grid, rev_where, "the pseudo label")

    choices: list[tuple[str, Source, np.ndarray]] = []
    for organ in table.organs:
        if organ.name in orig_names:
            source, array = "original", original.array
        elif organ.name in rev_names:
            # a confirmation's label is the pseudo label of the package it confirmed (what the annotator saw)
            source = revision.kind
            array = revision.label.array if revision.label is not None else pseudo.array
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


def reassemble_case(
    layout: WorkspaceLayout, case_id: str, annotated_organs: Sequence[str], revisions: Sequence[Revision], table: OrganTable, round_index: int
) -> ReassembledLabel:
    """original > revised > pseudo, organ by organ, with round ``round_index``'s pseudo label; writes the label.

    Returns the label with its provenance; every provenance row records the
    model round behind the pseudo label (``pseudo_round``).
    """
    pseudo = read_label(layout.pseudo_label(case_id, round_index))
    original = read_label(layout.original_label(case_id)) if annotated_organs else None
    result = reassemble(case_id, table, pseudo, original, tuple(annotated_organs), list(revisions) or None)
    write_label(layout.reassembled_label(case_id), result.label)
    return dataclasses.replace(result, pseudo_round=int(round_index))


__all__ = [
    "REVISION_RULE",
    "SOURCE_RANK",
    "OrganProvenance",
    "ReassembledLabel",
    "Revision",
    "reassemble",
    "reassemble_case",
    "select_revision",
]
