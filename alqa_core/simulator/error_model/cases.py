"""One case of the error-model campaign: its ground truth, its simulated ensemble, and what the rounds need of it.

:func:`prepare_case` does, for one case and through the platform's own
functions (:mod:`alqa_core.simulator.steps`): error-model members
(:func:`alqa_core.simulator.error_model.members.make_members`), the pseudo label
(:func:`alqa_core.ensemble.pseudo_labels.pseudo_label`), Eq. 1-4 attention
and its ``attention_organ`` rows, the slice/volume uncertainty the 004
strategies rank by (entropy of the members' mean), the round-0 labelled
dataset (original > pseudo, :func:`~alqa_core.simulator.steps.reassembled`),
the oracle's QA grade, and the attention scores of 003's Table 1. The
members are dropped after; a case keeps its truth and pseudo label only.

Ground truth comes from the phantom generator (labels of
:func:`alqa_core.phantoms.generate.generate_case`, cropped in-plane to the
organs plus a margin; every axial slice kept, since effort counts slices) or
from label files (e.g. TotalSegmentator v2 ``total`` labels of a real CT).

Failure cases (issue 15, "a configurable share"): a case drawn as a failure
gets major errors (:mod:`.error_model`). It *is* a failure of the dataset when
one of them lands: at least half of its wrong voxels are wrong in the round-0
labelled dataset (a low-confidence error the other members outvote, or one
on an organ the dataset annotates, never reaches the dataset). The failure is
*detectable* when a landed major error is not shared by every member;
failures whose every landed major error is shared are the detection floor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from alqa_core.config.sections import AttentionConfig
from alqa_core.ensemble.inference import binary_entropy
from alqa_core.ensemble.pseudo_labels import pseudo_label
from alqa_core.errors import AlqaInputError
from alqa_core.evaluation.attention_eval import error_region, score_attention
from alqa_core.evaluation.overlap import organ_dice
from alqa_core.io.nifti import read_label
from alqa_core.organs import OrganTable, class_map_preset, remap_labels
from alqa_core.phantoms.campaign import DEFAULT_DATASETS, CampaignSpec, plan_campaign
from alqa_core.phantoms.generate import PhantomSpec, generate_case
from alqa_core.simulator import steps
from alqa_core.simulator.error_model.members import ErrorModelCase, ErrorModelConfig, make_members
from alqa_core.simulator.oracle import worst_organ_grade
from alqa_core.strategies.uncertainty import CaseUncertainty, case_uncertainty
from alqa_core.volume import LabelMap

#: in-plane margin (voxels) kept around the organs when a phantom is cropped
CROP_MARGIN_VOX = 4


@dataclass(frozen=True)
class CaseSource:
    """Where one case's ground truth comes from: a phantom spec, or a label file and its class map."""

    case_id: str
    dataset: str
    annotated_organs: tuple[str, ...] = ()
    phantom: PhantomSpec | None = None
    label_path: str = ""
    class_map: str = "organ_table"


def phantom_sources(n_cases: int, seed: int, spacing_mm: float, hard_fraction: float = 0.25) -> tuple[CaseSource, ...]:
    """The cases of a phantom campaign plan (datasets with partial labels, hard cases), ground truth only."""
    spec = CampaignSpec(n_cases=n_cases, seed=seed, spacing_mm=(float(spacing_mm),) * 3, hard_fraction=hard_fraction)
    organs = {d.name: d.organs for d in DEFAULT_DATASETS}
    return tuple(
        CaseSource(p.case_id, p.dataset, organs[p.dataset] if p.split == "train" else (),
                   PhantomSpec(p.seed, spacing_mm=spec.spacing_mm, phase=p.phase, hard_kind=p.hard_kind))
        for p in plan_campaign(spec)
    )


def label_sources(paths: Sequence[str | Path], n_cases: int, class_map: str) -> tuple[CaseSource, ...]:
    """``n_cases`` cases cycling over label files (each draw of errors differs), none annotated by its dataset."""
    if not paths:
        raise AlqaInputError(None, "error model: no label files given")
    for p in paths:
        if not Path(p).is_file():
            raise AlqaInputError(p, "label file not found")
    if class_map != "organ_table":
        class_map_preset(class_map)  # an unknown preset fails here, before any case is made
    return tuple(CaseSource(f"{Path(paths[i % len(paths)]).name.split('.')[0]}_{i:04d}", "labels", (), None, str(paths[i % len(paths)]), class_map)
                 for i in range(n_cases))


def crop_in_plane(labels: LabelMap, margin: int = CROP_MARGIN_VOX) -> LabelMap:
    """The label map cropped along i and j to its organs plus ``margin`` voxels; every k slice kept; affine moved."""
    arr = np.asarray(labels.array)
    if not arr.any():
        return labels
    lo, hi = [], []
    for axis in (0, 1):
        hit = np.flatnonzero(arr.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(max(int(hit[0]) - margin, 0))
        hi.append(min(int(hit[-1]) + margin + 1, arr.shape[axis]))
    shift = np.eye(4)
    shift[:2, 3] = lo
    return LabelMap(np.ascontiguousarray(arr[lo[0] : hi[0], lo[1] : hi[1], :]), np.asarray(labels.affine) @ shift)


def ground_truth(source: CaseSource, table: OrganTable) -> LabelMap:
    if source.phantom is not None:
        return crop_in_plane(generate_case(source.phantom).labels)
    raw = read_label(source.label_path)
    if source.class_map == "organ_table":
        return raw
    remapped = remap_labels(np.asarray(raw.array), class_map_preset(source.class_map), table)
    return LabelMap(remapped.array, raw.affine)


def original_label(truth: LabelMap, organs: Sequence[str], table: OrganTable) -> LabelMap | None:
    """The dataset's own (partial) label: the truth of ``organs`` only, as a phantom dataset ships it."""
    if not organs:
        return None
    lut = np.zeros(table.max_value + 1, dtype=np.uint8)
    for name in organs:
        lut[table.value_of(name)] = table.value_of(name)
    return LabelMap(lut[np.asarray(truth.array)], truth.affine)


@dataclass(frozen=True, eq=False)
class EvidenceCase:
    """What the rounds and the report need of one case (the members are gone)."""

    case_id: str
    dataset: str
    annotated_organs: tuple[str, ...]
    truth: LabelMap
    pseudo: LabelMap
    attention_rows: tuple[dict, ...]
    uncertainty: CaseUncertainty
    #: organ -> Dice of the round-0 labelled dataset (original > pseudo) against the truth
    dice: dict
    grade: int
    failure_drawn: bool
    failure: bool
    detectable_failure: bool
    events: tuple[dict, ...]
    #: 003 Table 1 per scored organ: sensitivity (all / detectable error components), precision
    scores: tuple[dict, ...]
    seconds: float

    @property
    def n_slices(self) -> int:
        return int(self.truth.shape[2])


def _detectable(err: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """The error components (26-connected) that do not lie wholly in voxels every member got wrong."""
    if not (err & shared).any():
        return err
    labels, n = ndimage.label(err, structure=np.ones((3, 3, 3), dtype=bool))
    fully_shared = np.ones(n + 1, dtype=bool)
    fully_shared[np.unique(labels[err & ~shared])] = False
    return err & ~fully_shared[labels]


def landed_events(em: ErrorModelCase, dataset: np.ndarray, table: OrganTable) -> list[bool]:
    """Per event: are at least half of its wrong voxels wrong in the labelled dataset?"""
    flat = dataset.ravel()
    out = []
    for event in em.events:
        total = follows = 0
        for organ, value, idx in event.wrong:
            follows += int(np.count_nonzero((flat[idx] == table.value_of(organ)) == value))
            total += idx.size
        out.append(total > 0 and 2 * follows >= total)
    return out


def error_masks(pseudo: LabelMap, truth: LabelMap, em: ErrorModelCase, organs: Sequence[str], table: OrganTable) -> dict:
    """organ -> (error region, its detectable part): pseudo XOR truth, and its components not wholly every member's error."""
    out = {}
    for organ in organs:
        value = table.value_of(organ)
        err = error_region(np.asarray(pseudo.array) == value, np.asarray(truth.array) == value)
        out[organ] = (err, _detectable(err, em.shared_mask(table.channel_of(organ))))
    return out


def attention_scores(result, errors: dict, voxel_ml: float, min_error_ml: float) -> list[dict]:
    """003 Table 1 per organ of ``errors`` (:func:`error_masks`), through :func:`alqa_core.evaluation.attention_eval.score_attention`."""
    rows = []
    for organ, (err, seen_err) in errors.items():
        att = result.region(organ)
        every = score_attention(att, err, voxel_ml, min_error_ml, organ=organ)
        seen = score_attention(att, seen_err, voxel_ml, min_error_ml, organ=organ) if seen_err is not err else every
        overlap, n_att, n_err = int(np.count_nonzero(att & err)), int(np.count_nonzero(att)), int(np.count_nonzero(err))
        rows.append({
            "organ": organ, "sensitivity": every.sensitivity, "sensitivity_detectable": seen.sensitivity, "precision": every.precision,
            "error_components": every.error_components, "detectable_components": seen.error_components,
            "attention_components": every.attention_components,
            # voxel level, for contrast: how much of the error attention covers, and how much of attention is on an error
            "voxel_sensitivity": overlap / n_err if n_err else float("nan"),
            "voxel_precision": overlap / n_att if n_att else float("nan"),
        })
    return rows


def prepare_case(
    source: CaseSource,
    seed: Sequence[int],
    failure: bool,
    error_model: ErrorModelConfig,
    attention: AttentionConfig,
    table: OrganTable,
    min_error_ml: float,
) -> EvidenceCase:
    """Everything of one case for the rounds and the report (module doc); deterministic in ``seed``."""
    t0 = time.perf_counter()
    truth = ground_truth(source, table)
    present = set(np.unique(np.asarray(truth.array)).tolist())
    focus = tuple(o.name for o in table.organs if o.value in present and o.name not in source.annotated_organs)
    em = make_members(truth, table, error_model, seed, failure=failure, focus=focus, case_id=source.case_id)
    pseudo = pseudo_label(em.members, table)
    result = steps.attention(em.members, source.annotated_organs, attention, table, case_id=source.case_id, dataset=source.dataset)
    rows = result.size.to_records(0).attention_organ
    mean = np.mean([m.probabilities() for m in em.members], axis=0)
    uncertainty = case_uncertainty(source.case_id, binary_entropy(mean), mean)
    original = original_label(truth, source.annotated_organs, table)
    dataset = steps.reassembled(source.case_id, table, pseudo, original, source.annotated_organs, None).label
    dice = organ_dice(dataset, truth, table)
    grade = worst_organ_grade({o: d for o, d in dice.items() if o not in source.annotated_organs})
    landed = landed_events(em, np.asarray(dataset.array), table)
    major = [(e, hit) for e, hit in zip(em.events, landed) if e.major]
    scored = [o for o in table.names if o not in source.annotated_organs or attention.score_annotated]
    events = tuple({"mode": e.mode, "organ": e.organ, "other": e.other, "major": e.major, "shared": e.shared,
                    "members": len(e.members), "voxels": e.n_voxels, "landed": hit} for e, hit in zip(em.events, landed))
    return EvidenceCase(
        source.case_id, source.dataset, tuple(source.annotated_organs), truth, pseudo, tuple(rows), uncertainty, dice, grade,
        failure_drawn=failure,
        failure=any(hit for _, hit in major),
        detectable_failure=any(hit and not e.shared for e, hit in major),
        events=events,
        scores=tuple(attention_scores(result, error_masks(pseudo, truth, em, scored, table), truth.voxel_volume_ml, min_error_ml)),
        seconds=time.perf_counter() - t0,
    )


__all__ = [
    "CROP_MARGIN_VOX",
    "CaseSource",
    "EvidenceCase",
    "attention_scores",
    "crop_in_plane",
    "error_masks",
    "ground_truth",
    "label_sources",
    "landed_events",
    "original_label",
    "phantom_sources",
    "prepare_case",
]
