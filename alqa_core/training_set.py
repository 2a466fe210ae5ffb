"""The training set of a round: which label teaches which organs of which case.

Round 0 trains on the datasets' original (partial) labels. Later rounds add
the reassembled labels of cases a human reviewed (revised or confirmed),
which cover every organ. Pseudo labels of unreviewed cases are not trained
on: fine-tuning on the model's own output would only reinforce its errors.

A slice-level revision (USS, 004) annotates every organ on its slices only.
Its case then gives two training items: the original label for the organs
the dataset annotates (every voxel), and the reassembled label for every
organ on the revised slices only (``annotated_voxels``: the masked loss
gives the other voxels no gradient, w=0 of 004).

A deterministic share of labelled cases is held out for the round's
evaluation report and never trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from alqa_core.checkpoint import training_set_fingerprint
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_label, read_nifti_array
from alqa_core.organs import OrganTable
from alqa_core.preprocess import GridRecord, preprocess_label
from alqa_core.submissions import file_sha256, submitted_slices
from alqa_core.training import TrainingCase
from alqa_core.volume import LabelMap
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class TrainingSource:
    case_id: str
    label_path: Path  # on the case's original grid, organ-table values
    annotated_organs: tuple[str, ...]
    origin: str  # "original" | "reassembled" | "revised_slices"
    #: indices k along the third voxel axis of the case's original scan that are annotated; () = every voxel
    annotated_slices: tuple[int, ...] = ()

    @property
    def item_id(self) -> str:
        """The training item's id: the case id, with ``#slices`` for a slice-level revision (the same case gives two items)."""
        return f"{self.case_id}#slices" if self.annotated_slices else self.case_id


def is_holdout(case_id: str, fraction: float) -> bool:
    """A stable pseudo-random split by case id (the same on every machine and round)."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big") / 2**64
    return h < fraction


def select_sources(
    cases: pd.DataFrame,
    layout: WorkspaceLayout,
    reviewed: Iterable[str],
    table: OrganTable,
    holdout_fraction: float,
    revised_slices: Mapping[str, Sequence[int]] | None = None,
) -> list[TrainingSource]:
    """Training sources from the catalog's ``cases`` rows and the reviewed (revised/confirmed) case ids.

    ``revised_slices``: case id -> the slices a slice-level revision annotated
    (cases reviewed as whole volumes are absent).
    """
    reviewed, partial = set(reviewed), dict(revised_slices or {})
    out = []
    for row in cases.sort_values("case_id").itertuples():
        organs = tuple(o for o in str(row.annotated_organs or "").split(",") if o)
        if row.split != "train" or (organs and is_holdout(row.case_id, holdout_fraction)):
            continue
        reassembled = layout.reassembled_label(row.case_id)
        whole = row.case_id in reviewed and reassembled.exists() and not partial.get(row.case_id)
        if whole:
            out.append(TrainingSource(row.case_id, reassembled, table.names, "reassembled"))
            continue
        if organs:
            out.append(TrainingSource(row.case_id, layout.original_label(row.case_id), organs, "original"))
        if row.case_id in reviewed and reassembled.exists():
            slices = tuple(sorted({int(k) for k in partial[row.case_id]}))
            out.append(TrainingSource(row.case_id, reassembled, table.names, "revised_slices", slices))
    return out


def holdout_cases(cases: pd.DataFrame, holdout_fraction: float) -> list[str]:
    """Labelled cases kept out of training, for the evaluation report."""
    return sorted(
        r.case_id
        for r in cases.itertuples()
        if r.split == "train" and str(r.annotated_organs or "") and is_holdout(r.case_id, holdout_fraction)
    )


def annotated_voxels_of(slices: Sequence[int], record: GridRecord) -> np.ndarray:
    """The revised slices (third voxel axis of the original scan) as a mask on the preprocessed grid (nearest)."""
    original = record.original
    k = np.asarray(slices, dtype=int)
    if k.size == 0 or k.min() < 0 or k.max() >= original.shape[2]:
        raise AlqaInputError(None, f"revised slices {list(slices)} outside the scan's 0..{original.shape[2] - 1}")
    mask = np.zeros(original.shape, dtype=np.uint8)
    mask[:, :, k] = 1
    return preprocess_label(LabelMap(mask, original.affine), record) > 0


def load_training_case(source: TrainingSource, layout: WorkspaceLayout) -> TrainingCase:
    """The preprocessed image and the label brought onto its grid (with the revised slices' mask, for a slice-level revision)."""
    image, _ = read_nifti_array(layout.preprocessed(source.case_id))
    record = GridRecord.from_dict(json.loads(layout.grid_record(source.case_id).read_text()))
    label = preprocess_label(read_label(source.label_path), record)
    voxels = annotated_voxels_of(source.annotated_slices, record) if source.annotated_slices else None
    return TrainingCase(source.item_id, np.asarray(image, dtype=np.float32), label, source.annotated_organs, voxels)


def load_training_cases(sources: Sequence[TrainingSource], layout: WorkspaceLayout) -> list[TrainingCase]:
    return [load_training_case(s, layout) for s in sources]


def fingerprint(sources: Sequence[TrainingSource]) -> str:
    """sha256 over case ids, label file hashes and annotated organs: ties checkpoints to files."""
    return training_set_fingerprint(
        (f"{s.item_id}:{s.origin}:{','.join(s.annotated_organs)}" + (f":{_slices_text(s)}" if s.annotated_slices else ""), file_sha256(s.label_path))
        for s in sources
    )


def _slices_text(source: TrainingSource) -> str:
    return ",".join(str(k) for k in source.annotated_slices)


def manifest(sources: Sequence[TrainingSource], round_index: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "round": int(round_index),
                "case_id": s.case_id,
                "origin": s.origin,
                "annotated_organs": ",".join(s.annotated_organs),
                "label_path": str(s.label_path),
                "annotated_slices": _slices_text(s),
            }
            for s in sources
        ],
        columns=["round", "case_id", "origin", "annotated_organs", "label_path", "annotated_slices"],
    )


def sources_from_manifest(frame: pd.DataFrame, round_index: int) -> list[TrainingSource]:
    """The sources a round's ``training_set`` manifest (catalog table) lists."""
    rows = frame[frame["round"] == round_index] if not frame.empty else frame
    out = []
    for r in rows.sort_values(["case_id", "origin"]).itertuples():
        organs = tuple(o for o in str(r.annotated_organs).split(",") if o)
        out.append(TrainingSource(r.case_id, Path(r.label_path), organs, r.origin, submitted_slices(r)))
    return out


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
    from alqa_core.training.qa_loss import UnlabeledCase, build_qa_loss

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
    from alqa_core.checkpoint import save_checkpoint
    from alqa_core.models import ModelSpec
    from alqa_core.training import train

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
