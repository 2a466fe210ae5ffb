"""The training set of a round: which label teaches which organs of which case.

Round 0 trains on the datasets' original (partial) labels. Later rounds add
the reassembled labels of cases a human reviewed (revised or confirmed),
which cover every organ. Pseudo labels of unreviewed cases are not trained
on: fine-tuning on the model's own output would only reinforce its errors.

A deterministic share of labelled cases is held out for the round's
evaluation report and never trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from alqa_core.checkpoint import training_set_fingerprint
from alqa_core.io.nifti import read_label, read_nifti_array
from alqa_core.organs import OrganTable
from alqa_core.preprocess import GridRecord, preprocess_label
from alqa_core.submissions import file_sha256
from alqa_core.training import TrainingCase
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class TrainingSource:
    case_id: str
    label_path: Path  # on the case's original grid, organ-table values
    annotated_organs: tuple[str, ...]
    origin: str  # "original" | "reassembled"


def is_holdout(case_id: str, fraction: float) -> bool:
    """A stable pseudo-random split by case id (the same on every machine and round)."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big") / 2**64
    return h < fraction


def select_sources(
    cases: pd.DataFrame, layout: WorkspaceLayout, reviewed: Iterable[str], table: OrganTable, holdout_fraction: float
) -> list[TrainingSource]:
    """Training sources from the catalog's ``cases`` rows and the reviewed (revised/confirmed) case ids."""
    reviewed = set(reviewed)
    out = []
    for row in cases.sort_values("case_id").itertuples():
        organs = tuple(o for o in str(row.annotated_organs or "").split(",") if o)
        if row.split != "train" or (organs and is_holdout(row.case_id, holdout_fraction)):
            continue
        if row.case_id in reviewed and layout.reassembled_label(row.case_id).exists():
            out.append(TrainingSource(row.case_id, layout.reassembled_label(row.case_id), table.names, "reassembled"))
        elif organs:
            out.append(TrainingSource(row.case_id, layout.original_label(row.case_id), organs, "original"))
    return out


def holdout_cases(cases: pd.DataFrame, holdout_fraction: float) -> list[str]:
    """Labelled cases kept out of training, for the evaluation report."""
    return sorted(
        r.case_id
        for r in cases.itertuples()
        if r.split == "train" and str(r.annotated_organs or "") and is_holdout(r.case_id, holdout_fraction)
    )


def load_training_case(source: TrainingSource, layout: WorkspaceLayout) -> TrainingCase:
    """The preprocessed image and the label brought onto its grid."""
    image, _ = read_nifti_array(layout.preprocessed(source.case_id))
    record = GridRecord.from_dict(json.loads(layout.grid_record(source.case_id).read_text()))
    label = preprocess_label(read_label(source.label_path), record)
    return TrainingCase(source.case_id, np.asarray(image, dtype=np.float32), label, source.annotated_organs)


def load_training_cases(sources: Sequence[TrainingSource], layout: WorkspaceLayout) -> list[TrainingCase]:
    return [load_training_case(s, layout) for s in sources]


def fingerprint(sources: Sequence[TrainingSource]) -> str:
    """sha256 over case ids, label file hashes and annotated organs: ties checkpoints to files."""
    return training_set_fingerprint(
        (f"{s.case_id}:{s.origin}:{','.join(s.annotated_organs)}", file_sha256(s.label_path)) for s in sources
    )


def manifest(sources: Sequence[TrainingSource], round_index: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "round": int(round_index),
                "case_id": s.case_id,
                "origin": s.origin,
                "annotated_organs": ",".join(s.annotated_organs),
                "label_path": str(s.label_path),
            }
            for s in sources
        ],
        columns=["round", "case_id", "origin", "annotated_organs", "label_path"],
    )


def sources_from_manifest(frame: pd.DataFrame, round_index: int) -> list[TrainingSource]:
    """The sources a round's ``training_set`` manifest (catalog table) lists."""
    rows = frame[frame["round"] == round_index] if not frame.empty else frame
    return [
        TrainingSource(r.case_id, Path(r.label_path), tuple(o for o in str(r.annotated_organs).split(",") if o), r.origin)
        for r in rows.sort_values("case_id").itertuples()
    ]


@dataclass(frozen=True)
class CheckpointSummary:
    arch: str
    path: Path
    round_index: int
    parent: Path | None
    best_epoch: int | None
    epochs: int
    stopped_early: bool
    val_metrics: dict

    def record(self) -> dict:
        return {
            "arch": self.arch,
            "round": self.round_index,
            "path": str(self.path),
            "parent": "" if self.parent is None else str(self.parent),
            "best_epoch": -1 if self.best_epoch is None else self.best_epoch,
            "epochs": self.epochs,
            "stopped_early": self.stopped_early,
            **{f"val_{k}": float(v) for k, v in self.val_metrics.items()},
        }


def next_round_index(current: int, queue_answered: bool) -> int:
    """Round 0 first; a new round once the current round's queue is answered."""
    if current < 0:
        return 0
    return current + 1 if queue_answered else current


def train_architecture(
    layout: WorkspaceLayout,
    arch,
    cases: Sequence[TrainingCase],
    config,
    table: OrganTable,
    spacing_mm,
    round_index: int,
    training_set_sha256: str,
    progress=None,
) -> CheckpointSummary:
    """Train (round 0) or fine-tune from the previous round's checkpoint, and save it."""
    from alqa_core.checkpoint import save_checkpoint
    from alqa_core.models import ModelSpec
    from alqa_core.training import train

    parent = None
    for r in range(round_index - 1, -1, -1):
        if layout.checkpoint(arch.name, r).exists():
            parent = layout.checkpoint(arch.name, r)
            break
    spec = ModelSpec(arch.name, arch.size, len(table), arch.dropout)
    result = train(spec, cases, config, table, spacing_mm, parent, round_index, progress, training_set_sha256)
    path = save_checkpoint(layout.checkpoint(arch.name, round_index), result.network, result.meta)
    return CheckpointSummary(
        arch.name, path, round_index, parent, result.best_epoch, len(result.history), result.stopped_early, dict(result.meta.val_metrics)
    )
