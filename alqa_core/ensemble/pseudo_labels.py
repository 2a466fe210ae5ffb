"""The pseudo label: per organ the ensemble-mean probability, then the argmax over organs.

Averaging architectures reduces label bias (003 §4.1, "Evaluation of label
bias"). An organ's mean is taken over the members that cover it only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from alqa_core.ensemble.members import load_ensemble
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_label, write_label
from alqa_core.organs import OrganTable, canonical_organ_name
from alqa_core.volume import LabelMap, SoftPrediction, require_same_grid
from alqa_core.workspace import WorkspaceLayout

log = logging.getLogger(__name__)


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
        require_same_grid(ref, member.grid, name, ref_name)
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


def case_pseudo_label(layout: WorkspaceLayout, case_id: str, table: OrganTable, round_index: int) -> LabelMap:
    """Round ``round_index``'s argmax of the ensemble mean (each organ averaged over the members that cover it)."""
    preds, infos = load_ensemble(layout, case_id, table, round_index)
    return pseudo_label(preds, table, covered=[i.covered_organs for i in infos])


def write_case_pseudo_label(layout: WorkspaceLayout, case_id: str, table: OrganTable, round_index: int) -> Path:
    """Compute the round's pseudo label once and keep it: queues, reassembly and evaluation read this file."""
    return write_label(layout.pseudo_label(case_id, round_index), case_pseudo_label(layout, case_id, table, round_index))


def read_case_pseudo_label(layout: WorkspaceLayout, case_id: str, round_index: int) -> LabelMap:
    return read_label(layout.pseudo_label(case_id, round_index))


def latest_pseudo_round(layout: WorkspaceLayout, case_id: str, round_index: int) -> int | None:
    """The latest round at or before ``round_index`` that has a pseudo label of the case (None: never predicted)."""
    for r in range(int(round_index), -1, -1):
        if layout.pseudo_label(case_id, r).exists():
            return r
    return None
