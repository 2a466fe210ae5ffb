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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from alqa_core.annotation.intake.inbox import submitted_slices
from alqa_core.io.hashing import file_sha256, is_sha256_hex
from alqa_core.organs import OrganTable
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


def training_set_fingerprint(items: Iterable[tuple[str, bytes | str]]) -> str:
    """sha256 over ``(case_id, label)`` pairs, independent of their order.

    ``label`` is either the label file's bytes (hashed here) or its sha256 hex
    digest already computed. Two training sets have the same fingerprint
    exactly when they hold the same case ids with the same label content.
    """
    rows = []
    for case_id, label in items:
        if isinstance(label, (bytes, bytearray, memoryview)):
            digest = hashlib.sha256(bytes(label)).hexdigest()
        elif isinstance(label, str) and is_sha256_hex(label):
            digest = label.lower()
        else:
            raise ValueError(f"case {case_id!r}: label must be bytes or a sha256 hex digest, got {type(label).__name__}")
        rows.append(f"{case_id}\t{digest}\n")
    if len({r.split("\t")[0] for r in rows}) != len(rows):
        raise ValueError("training_set_fingerprint: duplicate case ids")
    return hashlib.sha256("".join(sorted(rows)).encode("utf-8")).hexdigest()


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
    if frame.empty or "origin" not in frame:  # an empty manifest (a round with nothing to train on)
        return []
    rows = frame[frame["round"] == round_index]
    out = []
    for r in rows.sort_values(["case_id", "origin"]).itertuples():
        organs = tuple(o for o in str(r.annotated_organs).split(",") if o)
        out.append(TrainingSource(r.case_id, Path(r.label_path), organs, r.origin, submitted_slices(r)))
    return out
