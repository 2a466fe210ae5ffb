"""Annotator effort accounting: what each submission cost, in minutes and per-organ corrections.

For every submission we record:

- **minutes**: ``submitted_at - package_created_at`` (wall clock, in minutes).
  This is the time from the work package being written to the answer
  arriving, so it includes any time the package waited in the queue: an
  upper bound on the time spent, exact when annotators open packages as
  they arrive. Both timestamps must be timezone-aware.
- **per-organ corrections** (:class:`OrganCorrection`): the pseudo label
  handed out vs the revised label returned, per organ: Dice, the changed
  voxels (symmetric difference of the two masks) and their volume in mL,
  plus each mask's volume. A **confirmation** is a zero correction: Dice 1,
  0 changed voxels, revised volume = pseudo volume.

Catalog layout (table ``effort``): **one row per (submission, organ)**, the
submission's fields repeated on each row (:func:`effort_records`). Tidy rows
keep per-organ questions plain SQL over the DuckDB views; per-submission
figures (minutes, totals) are taken once per ``submission_id``, as
:func:`summarize_effort` does. Write each submission's rows to the
partition named by its ``submission_id`` (append-only, like submissions).

A case answered more than once counts once, by its latest submission
(largest ``submitted_at``, ties by ``submission_id``), the same rule as
label reassembly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from alqa_core.annotation.intake.inbox import KINDS
from alqa_core.annotation.labelled.answers import Answer
from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable, canonical_organ_name
from alqa_core.volume import LabelMap

#: Columns of the catalog ``effort`` table, in order.
EFFORT_COLUMNS = (
    "submission_id",
    "case_id",
    "annotator",
    "round",
    "kind",
    "package_created_at",
    "submitted_at",
    "minutes",
    "organ",
    "dice",
    "changed_voxels",
    "changed_ml",
    "pseudo_ml",
    "revised_ml",
)

#: Voxels per bincount chunk: bounds the int64 temporaries to ~32 MB.
_CHUNK_VOXELS = 1 << 22


@dataclass(frozen=True)
class OrganCorrection:
    """Pseudo vs revised for one organ: Dice (both empty = 1), changed voxels and mL, and both volumes."""

    organ: str
    dice: float
    changed_voxels: int
    changed_ml: float
    pseudo_ml: float
    revised_ml: float


@dataclass(frozen=True)
class SubmissionEffort:
    """The effort of one submission (timestamps timezone-aware)."""

    submission_id: str
    case_id: str
    annotator: str
    round: int
    package_created_at: datetime
    submitted_at: datetime
    minutes: float
    kind: str
    per_organ: tuple[OrganCorrection, ...]

    @property
    def changed_voxels(self) -> int:
        return sum(c.changed_voxels for c in self.per_organ)

    @property
    def changed_ml(self) -> float:
        return float(sum(c.changed_ml for c in self.per_organ))

    @property
    def unchanged(self) -> bool:
        """Confirmed, or revised without changing a voxel."""
        return self.kind == "confirmed" or self.changed_voxels == 0


def parse_timestamp(value: str | datetime, where: str, what: str) -> datetime:
    """An ISO 8601 string or datetime, which must carry a timezone (AlqaInputError otherwise)."""
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            raise AlqaInputError(where, f"{what} {value!r} is not an ISO 8601 timestamp") from None
    if when.utcoffset() is None:
        raise AlqaInputError(where, f"{what} {value!r} has no timezone")
    return when


def minutes_between(start: datetime, end: datetime) -> float:
    """``end - start`` in minutes (negative if ``end`` is earlier)."""
    return (end - start).total_seconds() / 60.0


def _pair_counts(pseudo: np.ndarray, revised: np.ndarray, n_values: int) -> np.ndarray:
    """Joint histogram M[p, r] of (pseudo value, revised value) over all voxels, int64 (n, n).

    Hand-written as a chunked ``np.bincount`` of ``p * n + r``: one pass gives
    every organ's |P|, |R| and |P & R| at once with bounded memory, where
    one-hot tensors (monai.metrics.compute_dice) would need C float volumes.
    """
    p = pseudo.reshape(-1)
    r = revised.reshape(-1)
    counts = np.zeros(n_values * n_values, dtype=np.int64)
    for start in range(0, p.size, _CHUNK_VOXELS):
        stop = start + _CHUNK_VOXELS
        code = p[start:stop].astype(np.int64) * n_values + r[start:stop].astype(np.int64)
        counts += np.bincount(code, minlength=n_values * n_values)
    return counts.reshape(n_values, n_values)


def _label_values(label: LabelMap, where: str, what: str) -> np.ndarray:
    arr = np.asarray(label.array)
    if arr.size and int(arr.min()) < 0:
        raise AlqaInputError(where, f"{what} has negative label values")
    return arr


def organ_corrections(
    pseudo: LabelMap, revised: LabelMap | None, table: OrganTable, organs: Sequence[str] | None = None, where: str = "submission"
) -> tuple[OrganCorrection, ...]:
    """Per-organ :class:`OrganCorrection` of ``revised`` against ``pseudo`` (organ-table numbering).

    ``revised=None`` is a confirmation: every organ unchanged. ``organs``:
    which to report (default: the whole table). Grids must match.
    """
    names = table.names if organs is None else tuple(canonical_organ_name(o) for o in organs)
    if not names:
        raise ValueError("organ_corrections needs at least one organ")
    voxel_ml = pseudo.voxel_volume_ml
    p = _label_values(pseudo, where, "the pseudo label")
    if revised is None:
        counts = np.bincount(p.reshape(-1).astype(np.int64), minlength=table.max_value + 1)
        out = []
        for name in names:
            n = int(counts[table.value_of(name)])
            out.append(OrganCorrection(name, 1.0, 0, 0.0, n * voxel_ml, n * voxel_ml))
        return tuple(out)
    if not revised.grid.matches(pseudo.grid):
        raise AlqaInputError(
            where, f"the revised label's grid {revised.shape} differs from the pseudo label's {pseudo.shape} (shape or affine)"
        )
    r = _label_values(revised, where, "the revised label")
    n_values = int(max(table.max_value, p.max(initial=0), r.max(initial=0))) + 1
    joint = _pair_counts(p, r, n_values)
    in_pseudo, in_revised = joint.sum(axis=1), joint.sum(axis=0)
    out = []
    for name in names:
        v = table.value_of(name)
        n_p, n_r, both = int(in_pseudo[v]), int(in_revised[v]), int(joint[v, v])
        dice = 1.0 if n_p + n_r == 0 else 2.0 * both / (n_p + n_r)
        changed = n_p + n_r - 2 * both
        out.append(OrganCorrection(name, dice, changed, changed * voxel_ml, n_p * voxel_ml, n_r * voxel_ml))
    return tuple(out)


def submission_effort(
    submission_id: str,
    case_id: str,
    annotator: str,
    round_index: int,
    package_created_at: str | datetime,
    submitted_at: str | datetime,
    kind: str,
    pseudo: LabelMap,
    revised: LabelMap | None,
    table: OrganTable,
    organs: Sequence[str] | None = None,
) -> SubmissionEffort:
    """The effort of one submission: minutes from package to answer, and per-organ corrections.

    ``kind`` "revised" needs ``revised``; "confirmed" must have ``revised=None``
    (ValueError otherwise). AlqaInputError, naming the submission, for naive or
    unparsable timestamps, an answer older than its package, or mismatched grids.
    """
    where = f"submission {submission_id} (case {case_id})"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if (kind == "revised") != (revised is not None):
        raise ValueError(f"{where}: a revision needs its revised label; a confirmation has none")
    created = parse_timestamp(package_created_at, where, "package_created_at")
    submitted = parse_timestamp(submitted_at, where, "submitted_at")
    minutes = minutes_between(created, submitted)
    if minutes < 0:
        raise AlqaInputError(where, f"submitted at {submitted.isoformat()}, before its work package was created at {created.isoformat()}")
    return SubmissionEffort(
        submission_id=str(submission_id),
        case_id=str(case_id),
        annotator=str(annotator),
        round=int(round_index),
        package_created_at=created,
        submitted_at=submitted,
        minutes=float(minutes),
        kind=kind,
        per_organ=organ_corrections(pseudo, revised, table, organs, where),
    )


def effort_records(efforts: Iterable[SubmissionEffort]) -> pd.DataFrame:
    """Rows of the catalog ``effort`` table: one per (submission, organ), columns :data:`EFFORT_COLUMNS`.

    Timestamps become UTC ``datetime64`` columns.
    """
    rows = []
    for e in efforts:
        head = {
            "submission_id": e.submission_id,
            "case_id": e.case_id,
            "annotator": e.annotator,
            "round": e.round,
            "kind": e.kind,
            "package_created_at": e.package_created_at,
            "submitted_at": e.submitted_at,
            "minutes": e.minutes,
        }
        for c in e.per_organ:
            rows.append({**head, "organ": c.organ, "dice": c.dice, "changed_voxels": c.changed_voxels,
                         "changed_ml": c.changed_ml, "pseudo_ml": c.pseudo_ml, "revised_ml": c.revised_ml})
    frame = pd.DataFrame(rows, columns=list(EFFORT_COLUMNS))
    for col in ("package_created_at", "submitted_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame.astype({"round": "int64", "changed_voxels": "int64", "minutes": "float64", "dice": "float64",
                         "changed_ml": "float64", "pseudo_ml": "float64", "revised_ml": "float64"})


# --------------------------------------------------------------------------- summaries


def submission_efforts(answers: Sequence[Answer], table: OrganTable) -> pd.DataFrame:
    """Effort rows (``effort`` table) for a case's answers (:func:`~alqa_core.annotation.labelled.answers.case_answers`) that answered a work package.

    Minutes run from the package's creation (its task.json) to the submission;
    corrections compare the package's pseudo label with the revision as
    validated (a slice-level one is that pseudo label with the revised slices,
    so only they count). A submission for a case that was never queued has no
    package to measure against. Nothing is read here.
    """
    efforts = [
        submission_effort(a.submission_id, a.case_id, a.annotator, a.round_index, a.package.created_at, a.submitted_at, a.kind, a.package_label,
                          a.label if a.kind == "revised" else None, table)
        for a in answers
        if a.package is not None
    ]
    return effort_records(efforts) if efforts else pd.DataFrame()
