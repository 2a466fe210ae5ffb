"""Validating one inbox entry against its case: the grid, the label values, emptied organs, swaps, slices.

Reasons reject an entry; flags only warn. A slice-level revision is merged
onto the work package's pseudo label before the checks. An accepted
revision's verdict carries the label it checked (organ values on the case's
grid, slices merged): the intake stores it, and everything downstream reads
that file instead of reading and mapping the submitted one again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from alqa_core.annotation.intake.inbox import InboxEntry, SubmissionMeta, read_meta
from alqa_core.annotation.intake.label_files import read_submitted_label
from alqa_core.errors import AlqaInputError
from alqa_core.io.hashing import file_sha256
from alqa_core.organs import OrganTable
from alqa_core.volume import Grid, LabelMap, label_value_counts
from alqa_core.workspace import validate_case_id


@dataclass(frozen=True)
class Verdict:
    """The outcome of validating one entry: reasons reject, flags only warn."""

    entry: InboxEntry
    meta: SubmissionMeta | None
    reasons: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    sha256: str = ""
    organ_voxels: dict = field(default_factory=dict)
    #: the work package version the entry answers ("" when the case was never queued)
    package_id: str = ""
    #: the revision as checked: organ values on the case's grid, a slice-level revision merged onto the
    #: package's pseudo label (None: a confirmation, or a rejected entry)
    label: LabelMap | None = field(default=None, compare=False, repr=False)

    @property
    def accepted(self) -> bool:
        return not self.reasons


def _centroid_x_mm(mask: np.ndarray, affine: np.ndarray) -> float:
    """The mask's centroid along world x: the mean voxel index per axis from the mask's per-axis
    counts (three reductions, no coordinate list: ``argwhere`` took 0.5 s on a 512x512x300 label)."""
    n = np.count_nonzero(mask)
    idx = [
        float(np.arange(mask.shape[a]) @ np.count_nonzero(mask, axis=tuple(b for b in range(mask.ndim) if b != a))) / n
        for a in range(mask.ndim)
    ]
    return float((affine @ np.append(idx, 1.0))[0])


def check_revision(
    label: LabelMap, reference: Grid, pseudo: LabelMap | None, table: OrganTable, emptied_organs=(), volume_change_factor: float = 2.0
) -> tuple[list[str], list[str], dict]:
    """Reasons to reject and flags to raise for a revised label against its case."""
    reasons: list[str] = []
    flags: list[str] = []
    if not label.grid.matches(reference):
        reasons.append(
            f"not on the case's grid: shape {label.shape} vs {reference.shape}, or the affine differs by more than 1e-3 mm"
        )
        return reasons, flags, {}
    arr = np.asarray(label.array)
    values, counts = label_value_counts(arr)
    unknown = sorted(int(v) for v in values if v != 0 and int(v) not in table.values)
    if unknown:
        reasons.append(f"label values {unknown} are not in the organ table {list(table.values)}")
    voxels = {table.name_of(int(v)): int(c) for v, c in zip(values, counts) if int(v) in table.values}
    if pseudo is not None:
        pv, pc = label_value_counts(np.asarray(pseudo.array))
        before = {table.name_of(int(v)): int(c) for v, c in zip(pv, pc) if int(v) in table.values}
        emptied = sorted(o for o in before if voxels.get(o, 0) == 0 and o not in set(emptied_organs))
        if emptied:
            reasons.append(f"organs {emptied} were emptied without saying so (pass --emptied to confirm)")
        for organ, n_before in before.items():
            n_after = voxels.get(organ, 0)
            if n_after and (n_after > n_before * volume_change_factor or n_after * volume_change_factor < n_before):
                flags.append(f"{organ}: volume changed {n_before} -> {n_after} voxels (more than x{volume_change_factor})")
        if {"kidney_right", "kidney_left"} <= set(voxels) and {"kidney_right", "kidney_left"} <= set(before):
            vr = table.value_of("kidney_right")
            vl = table.value_of("kidney_left")
            swapped_now = _centroid_x_mm(arr == vr, label.affine) < _centroid_x_mm(arr == vl, label.affine)
            swapped_before = _centroid_x_mm(np.asarray(pseudo.array) == vr, pseudo.affine) < _centroid_x_mm(
                np.asarray(pseudo.array) == vl, pseudo.affine
            )
            if swapped_now != swapped_before:
                flags.append("kidney_right/kidney_left look swapped relative to the pseudo label")
    return reasons, flags, voxels


def slice_revision_problem(slices, reference: Grid, pseudo: LabelMap | None) -> str | None:
    """Why a slice-level revision cannot be taken, or None."""
    n = reference.shape[2]
    outside = [k for k in slices if not 0 <= k < n]
    if outside:
        return f"annotated slices {outside} are outside the scan's slices 0..{n - 1}"
    if pseudo is None:
        return "a slice-level revision needs the case's work package (its pseudo label fills the other slices); queue the case first"
    return None


def apply_slice_revision(base: LabelMap, revised: LabelMap, slices) -> LabelMap:
    """``base`` with the revised label on ``slices`` (third voxel axis) only; neither input is changed."""
    merged = np.array(base.array, copy=True)
    k = np.asarray(list(slices), dtype=int)
    merged[:, :, k] = np.asarray(revised.array)[:, :, k]
    return LabelMap(merged, base.affine)


def validate_entry(
    entry: InboxEntry,
    known_cases: set[str] | frozenset[str],
    reference_of,
    package_of,
    table: OrganTable,
    max_file_mb: float = 2048.0,
    volume_change_factor: float = 2.0,
) -> Verdict:
    """Validate one inbox entry against its case.

    ``reference_of(case) -> Grid`` (the raw scan's; raises AlqaInputError while
    the case is not ingested), ``package_of(case, package_id) -> (package_id,
    pseudo LabelMap) | None``: the named work package, or the case's newest
    when none is named (None: never queued; an unknown name raises
    AlqaInputError, which rejects the entry).
    """
    try:
        meta = read_meta(entry)
    except AlqaInputError as exc:
        return Verdict(entry, None, (str(exc),))
    where = entry.label_path or entry.meta_path
    try:
        validate_case_id(meta.case_id, where)
    except AlqaInputError as exc:
        return Verdict(entry, meta, (str(exc),))
    if meta.case_id not in known_cases:
        return Verdict(entry, meta, (f"{where}: case {meta.case_id!r} is not part of this campaign",))
    try:
        package = package_of(meta.case_id, meta.package)
    except AlqaInputError as exc:
        return Verdict(entry, meta, (f"{where}: {exc.reason}",))
    package_id, pseudo = package if package is not None else ("", None)
    if meta.kind == "confirmed":
        if package is None:
            return Verdict(entry, meta, (f"{where}: case {meta.case_id} has no work package to confirm (it was never queued)",))
        return Verdict(entry, meta, sha256=hashlib.sha256(entry.meta_path.read_bytes()).hexdigest(), package_id=package_id)
    if entry.label_path is None:
        return Verdict(entry, meta, (f"{where}: a revision needs a label file",))
    size_mb = entry.label_path.stat().st_size / 2**20
    if size_mb > max_file_mb:
        return Verdict(entry, meta, (f"{entry.label_path}: {size_mb:.0f} MB exceeds the {max_file_mb:.0f} MB limit (not read)",))
    reference = reference_of(meta.case_id)
    try:
        label = read_submitted_label(entry.label_path, table, meta.segment_names, reference)
    except AlqaInputError as exc:
        return Verdict(entry, meta, (str(exc),))
    if meta.annotated_slices and label.grid.matches(reference):
        problem = slice_revision_problem(meta.annotated_slices, reference, pseudo)
        if problem:
            return Verdict(entry, meta, (f"{entry.label_path}: {problem}",))
        label = apply_slice_revision(pseudo, label, meta.annotated_slices)
    reasons, flags, voxels = check_revision(label, reference, pseudo, table, meta.emptied_organs, volume_change_factor)
    reasons = tuple(f"{entry.label_path}: {r}" for r in reasons)
    return Verdict(entry, meta, reasons, tuple(flags), file_sha256(entry.label_path), voxels, package_id, None if reasons else label)
