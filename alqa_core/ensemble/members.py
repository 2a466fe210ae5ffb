"""A case's ensemble on disk: every member's soft prediction and ``members.json``.

Predictions lie on the case's original grid under
``soft_predictions/<case>/<member>.nii.gz``; ``members.json`` records, per
member, its kind, the organs it covers and whether it is one-hot (a label
map), which Eq. 3's overlap needs. :mod:`alqa_core.ensemble.predict` writes
them; everything that reads them goes through :func:`load_ensemble`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.ingest.preprocess import GridRecord, PreprocessedCT
from alqa_core.io.atomic import atomic_write_text
from alqa_core.io.nifti import read_nifti_array, read_soft_prediction
from alqa_core.organs import OrganTable
from alqa_core.volume import SoftPrediction
from alqa_core.workspace import WorkspaceLayout

MEMBERS_FILE = "members.json"


@dataclass(frozen=True)
class MemberInfo:
    name: str
    kind: str  # "trained" | "mc_sample" (one MC-dropout pass of a trained member) | "external"
    one_hot: bool
    covered_organs: tuple[str, ...]
    source: str


def load_preprocessed(layout: WorkspaceLayout, case_id: str) -> PreprocessedCT:
    array, _ = read_nifti_array(layout.preprocessed(case_id))
    record = GridRecord.from_dict(json.loads(layout.grid_record(case_id).read_text()))
    return PreprocessedCT(np.asarray(array, dtype=np.float32), record)


def load_ensemble(layout: WorkspaceLayout, case_id: str, table: OrganTable, round_index: int) -> tuple[list[SoftPrediction], list[MemberInfo]]:
    """Every member's prediction of a case in round ``round_index``, restricted to the organs each member covers."""
    path = members_path(layout, case_id, round_index)
    if not path.exists():
        raise AlqaInputError(path, f"no soft predictions for case {case_id} in round {round_index}; materialize soft_predictions first")
    infos = [MemberInfo(**{**d, "covered_organs": tuple(d["covered_organs"])}) for d in json.loads(path.read_text())]
    preds = []
    for info in infos:
        full = read_soft_prediction(layout.soft_prediction(case_id, info.name, round_index), table.names, info.name)
        keep = [table.names.index(o) for o in info.covered_organs]
        preds.append(SoftPrediction(np.asarray(full.array)[keep], full.affine, info.covered_organs, info.name))
    return preds, infos


def write_members(layout: WorkspaceLayout, case_id: str, round_index: int, infos: Sequence[MemberInfo]) -> Path:
    """The case's ``members.json`` for the round, written last (after every member's file), atomically."""
    return atomic_write_text(members_path(layout, case_id, round_index), json.dumps([asdict(i) for i in infos], indent=1))


def members_path(layout: WorkspaceLayout, case_id: str, round_index: int) -> Path:
    return layout.soft_predictions(case_id, round_index) / MEMBERS_FILE


def organs_with_few_members(infos: Sequence[MemberInfo], table: OrganTable, minimum: int = 2) -> dict[str, int]:
    """Organs fewer than ``minimum`` members cover -> how many do (Eq. 1's spread needs at least two)."""
    counts = {o: sum(o in i.covered_organs for i in infos) for o in table.names}
    return {o: n for o, n in counts.items() if n < minimum}
