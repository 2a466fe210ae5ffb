"""Fitting a round's networks: one checkpoint per architecture, fine-tuned from the previous round's, and the optional QA-loss term."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from alqa_core.config.models import ModelSpec
from alqa_core.io.nifti import read_nifti_array
from alqa_core.organs import OrganTable
from alqa_core.training.cases import TrainingCase
from alqa_core.training.training_set import TrainingSource, is_holdout
from alqa_core.workspace import WorkspaceLayout


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


def qa_loss_term(
    config, layout: WorkspaceLayout, cases: pd.DataFrame, sources: Sequence[TrainingSource], table: OrganTable, holdout_fraction: float = 0.0
):
    """The optional QA-loss term (001) over unlabeled cases, or None when off.

    ``config.case_ids``, else every preprocessed ``train``-split case outside the
    round's training set and the evaluation hold-out (so the QA term never sees
    the images the evaluation report scores).
    """
    if config is None or not config.enabled:
        return None
    from alqa_core.training.qa_loss import UnlabeledCase, build_qa_loss  # torch: only when the mode is on

    trained = {s.case_id for s in sources}
    eligible = (
        r.case_id
        for r in cases.itertuples()
        if getattr(r, "split", "train") == "train"
        and r.case_id not in trained
        and not is_holdout(r.case_id, holdout_fraction)
        and layout.preprocessed(r.case_id).exists()
    )
    ids = sorted(config.case_ids or eligible)
    unlabeled = [UnlabeledCase(c, np.asarray(read_nifti_array(layout.preprocessed(c))[0], dtype=np.float32)) for c in ids]
    return build_qa_loss(config, unlabeled, table)


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
    extra_loss=None,
) -> CheckpointSummary:
    """Train (round 0) or fine-tune from the previous round's checkpoint, and save it."""
    from alqa_core.ensemble.checkpoint import save_checkpoint
    from alqa_core.training.trainer import train

    parent = None
    for r in range(round_index - 1, -1, -1):
        if layout.checkpoint(arch.name, r).exists():
            parent = layout.checkpoint(arch.name, r)
            break
    spec = ModelSpec(arch.name, arch.size, len(table), arch.dropout)
    result = train(spec, cases, config, table, spacing_mm, parent, round_index, progress, training_set_sha256, extra_loss)
    path = save_checkpoint(layout.checkpoint(arch.name, round_index), result.network, result.meta)
    return CheckpointSummary(
        arch.name, path, round_index, parent, result.best_epoch, len(result.history), result.stopped_early, dict(result.meta.val_metrics)
    )
