"""The oracle annotator: answers queued cases or slices from a phantom campaign's hidden ground truth.

The ground truth (``<campaign>/ground_truth/labelsTr/<case>.nii.gz`` and
``manifest.csv``) is never an input of the platform; only the oracle and the
scoring read it.

- a queued **whole volume** is answered with the ground-truth label of every organ;
- queued **slices** are answered with the ground truth on those slices only
  (:func:`alqa_core.strategies.partial_training_case`: voxels elsewhere get no gradient);
- a **QA grade** (0 success, 1 usable, 2 failure) is derived from the mean
  Dice of a prediction against the ground truth: 2 if < 0.5, 1 if < 0.8, else 0.
  :func:`worst_organ_grade` grades by the worst organ instead (the
  error-model campaign's oracle): a montage with a kidney missing is a
  failure whatever the liver's Dice, as 000 grades one organ per prediction.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from alqa_core.errors import AlqaInputError
from alqa_core.evaluation.segmentation import evaluate_case
from alqa_core.organs import OrganTable
from alqa_core.strategies.partial import partial_training_case
from alqa_core.training.cases import TrainingCase
from alqa_core.volume import LabelMap

#: mean Dice below this: grade 2 (failure)
FAILURE_DICE = 0.5
#: mean Dice below this (and >= FAILURE_DICE): grade 1 (usable); else 0 (success)
USABLE_DICE = 0.8
MANIFEST_COLUMNS = ("case_id", "dataset", "split", "hard_kind")


def ground_truth_path(campaign_root: str | Path, case_id: str) -> Path:
    return Path(campaign_root) / "ground_truth" / "labelsTr" / f"{case_id}.nii.gz"


def read_manifest(campaign_root: str | Path) -> pd.DataFrame:
    """The campaign's ``ground_truth/manifest.csv`` (``hard_kind`` "" when the case is not hard)."""
    path = Path(campaign_root) / "ground_truth" / "manifest.csv"
    if not path.is_file():
        raise AlqaInputError(path, "no ground-truth manifest: the simulator needs a phantom campaign (write_campaign)")
    frame = pd.read_csv(path, dtype={"case_id": str, "hard_kind": str}, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise AlqaInputError(path, f"manifest lacks columns {missing}")
    return frame


def grade_from_dice(mean_dice: float) -> int:
    """QA grade of a prediction from its mean Dice: 2 if < 0.5, 1 if < 0.8, else 0 (NaN: 2)."""
    if not np.isfinite(mean_dice) or mean_dice < FAILURE_DICE:
        return 2
    return 1 if mean_dice < USABLE_DICE else 0


def worst_organ_grade(dice: Mapping[str, float]) -> int:
    """QA grade from the worst organ's Dice (0, a success, when no organ is graded)."""
    return grade_from_dice(min(dice.values())) if dice else 0


def present_organs(gt: LabelMap, table: OrganTable) -> tuple[str, ...]:
    """Organs with at least one ground-truth voxel (absent organs are not scored: Dice 1 of two empty masks would inflate means)."""
    values = set(np.unique(np.asarray(gt.array)).tolist())
    return tuple(n for n in table.names if table.value_of(n) in values)


def oracle_grade(pred: LabelMap, gt: LabelMap, table: OrganTable, case_id: str = "") -> int:
    """The grade a perfect reviewer gives ``pred``: from its mean Dice over the organs present in ``gt``."""
    organs = present_organs(gt, table)
    if not organs:
        return 0
    dice = [m.dice for m in evaluate_case(pred, gt, table, organs, case_id=case_id)]
    return grade_from_dice(float(np.mean(dice)))


def answer_volume(truth: TrainingCase, table: OrganTable) -> TrainingCase:
    """A whole queued volume: the ground truth of every organ, every voxel."""
    return replace(truth, annotated_organs=table.names, annotated_voxels=None)


def answer_slices(truth: TrainingCase, slices: Iterable[int], table: OrganTable, case_id: str | None = None, axis: int = -1) -> TrainingCase:
    """Queued slices: the ground truth of every organ on ``slices`` only (pass all slices answered so far)."""
    full = answer_volume(truth, table)
    out = partial_training_case(full, slices, axis)
    return out if case_id is None else replace(out, case_id=case_id)


def hard_case_share(case_ids: Sequence[str], manifest: pd.DataFrame) -> float:
    """Share of ``case_ids`` whose manifest ``hard_kind`` is non-empty (NaN for no cases)."""
    ids = list(dict.fromkeys(case_ids))
    if not ids:
        return float("nan")
    kinds = dict(zip(manifest["case_id"].astype(str), manifest["hard_kind"].fillna("").astype(str)))
    unknown = [c for c in ids if c not in kinds]
    if unknown:
        raise KeyError(f"cases {unknown} are not in the ground-truth manifest")
    return sum(1 for c in ids if kinds[c].strip()) / len(ids)


__all__ = [
    "FAILURE_DICE",
    "USABLE_DICE",
    "answer_slices",
    "answer_volume",
    "grade_from_dice",
    "ground_truth_path",
    "hard_case_share",
    "oracle_grade",
    "present_organs",
    "read_manifest",
    "worst_organ_grade",
]
