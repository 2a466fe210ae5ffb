"""Ingest: a campaign's datasets -> PHI-free NIfTI scans and organ-table labels in the workspace.

The user's datasets are read, never written. Each case's CT (NIfTI or a DICOM
series) is re-written as int16 HU NIfTI with a clean header, and its partial
label is remapped onto the organ table on the same grid. These are the
``raw_scans`` and ``original_labels`` assets.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig
from alqa_core.config.sections import PreprocessConfig
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.case_files import load_case_image, load_case_label_report
from alqa_core.ingest.dataset import CaseRecord, DatasetRecord, ExternalPredictionRecord, read_datasets, read_prediction_folder, unlisted_by_name
from alqa_core.ingest.preprocess import preprocess_ct
from alqa_core.io.atomic import atomic_write_bytes, atomic_write_text
from alqa_core.io.nifti import read_ct, read_grid, read_label, write_ct, write_label, write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE, ClassMap, OrganTable, class_map_preset, identity_class_map
from alqa_core.render import render_overview
from alqa_core.volume import LabelMap, label_value_counts
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class CampaignIndex:
    """Every case of a campaign's datasets, by case id."""

    datasets: tuple[DatasetRecord, ...]

    @property
    def cases(self) -> dict[str, CaseRecord]:
        return {c.case_id: c for d in self.datasets for c in d.cases}

    def case(self, case_id: str) -> CaseRecord:
        """The case's record; an input error if no dataset of the campaign has it (any more)."""
        found = self.cases.get(case_id)
        if found is None:
            raise AlqaInputError(None, f"case {case_id!r} is in none of the campaign's datasets {[str(d.root) for d in self.datasets]}")
        return found

    def dataset_of(self, case_id: str) -> DatasetRecord:
        for d in self.datasets:
            if case_id in d.case_ids:
                return d
        raise KeyError(f"case {case_id!r} is in none of the campaign's datasets {[d.name for d in self.datasets]}")

    def predictions_of(self, case_id: str) -> tuple[ExternalPredictionRecord, ...]:
        return tuple(p for p in self.dataset_of(case_id).predictions if p.case_id == case_id)

    @property
    def unlisted_predictions(self) -> dict[str, tuple[Path, ...]]:
        """Folder name under ``<dataset>/predictions/`` that no member names -> where it is (never read)."""
        return unlisted_by_name(d.unlisted_predictions for d in self.datasets)

    def cases_frame(self) -> pd.DataFrame:
        """Rows for the catalog's ``cases`` table."""
        return pd.DataFrame([case_row(c) for c in self.cases.values()], columns=list(CASE_COLUMNS))


CASE_COLUMNS = ("case_id", "dataset", "split", "image_format", "has_label", "annotated_organs")


def case_row(case: CaseRecord) -> dict:
    """The case's row of the catalog's ``cases`` table."""
    return {
        "case_id": case.case_id,
        "dataset": case.dataset,
        "split": case.split,
        "image_format": case.image_format,
        "has_label": case.label_path is not None,
        "annotated_organs": ",".join(case.annotated_organs),
    }


def member_class_maps(config: CampaignConfig) -> dict[str, ClassMap]:
    """External member name -> its class map (a preset, or the organ table itself)."""
    return {
        m.name: identity_class_map(config.organ_table) if m.class_map == "organ_table" else class_map_preset(m.class_map)
        for m in config.external_members
    }


def index_campaign(config: CampaignConfig) -> CampaignIndex:
    """Scan the campaign's datasets (cheap: listings and dataset.json only).

    The ensemble's external members are exactly ``config.external_members``: each is read from its ``folder`` when
    it names one, else from ``<dataset>/predictions/<name>/`` of every dataset. Other folders under ``predictions/``
    are listed (:attr:`CampaignIndex.unlisted_predictions`) and never read.
    """
    maps = member_class_maps(config)
    elsewhere = {m.name: m.folder for m in config.external_members if m.folder is not None}
    in_datasets = {name: cmap for name, cmap in maps.items() if name not in elsewhere}
    datasets = read_datasets([d.path for d in config.datasets], config.organ_table, in_datasets, named=tuple(elsewhere))
    if elsewhere:
        owner = {case_id: i for i, d in enumerate(datasets) for case_id in d.case_ids}
        extra: dict[int, list[ExternalPredictionRecord]] = {}
        for name, folder in elsewhere.items():
            for rec in read_prediction_folder(folder, name, maps[name], owner):
                extra.setdefault(owner[rec.case_id], []).append(rec)
        datasets = tuple(
            dataclasses.replace(d, predictions=tuple(sorted((*d.predictions, *extra.get(i, ())), key=lambda r: (r.member, r.case_id))))
            for i, d in enumerate(datasets)
        )
    return CampaignIndex(datasets)


@dataclass(frozen=True)
class ScanSummary:
    case_id: str
    path: Path
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    hu_min: float
    hu_max: float
    affine: tuple[float, ...]

    def geometry_row(self) -> dict:
        return {
            "case_id": self.case_id,
            "shape_i": self.shape[0],
            "shape_j": self.shape[1],
            "shape_k": self.shape[2],
            "spacing_i_mm": self.spacing_mm[0],
            "spacing_j_mm": self.spacing_mm[1],
            "spacing_k_mm": self.spacing_mm[2],
            "affine": list(self.affine),
        }


def ingest_scan(case: CaseRecord, out_path: Path) -> ScanSummary:
    """Read the case's CT (NIfTI or DICOM) and write it as clean int16 NIfTI at ``out_path``."""
    ct = load_case_image(case)
    write_ct(out_path, ct)
    arr = ct.array
    return ScanSummary(
        case.case_id,
        Path(out_path),
        tuple(int(s) for s in arr.shape),
        ct.spacing_mm,
        float(arr.min()),
        float(arr.max()),
        tuple(float(v) for v in np.asarray(ct.affine).ravel()),
    )


@dataclass(frozen=True)
class LabelSummary:
    case_id: str
    path: Path
    annotated_organs: tuple[str, ...]
    organ_voxels: Mapping[str, int]
    organ_ml: Mapping[str, float]
    unmapped_voxels: int


def ingest_label(case: CaseRecord, dataset: DatasetRecord, table: OrganTable, raw_scan: Path, out_path: Path) -> LabelSummary:
    """Write the case's original label in organ-table values on the raw scan's grid (zeros if unlabeled).

    An unlabeled case still gets a file, so every case has an ``original_labels``
    partition; its empty ``annotated_organs`` says that nothing in it is a label.
    """
    reference = read_grid(raw_scan)
    named = None if dataset.preset else dataset.named_values
    report = load_case_label_report(case, dataset.class_map, table, reference, named)
    if report is None:
        label = LabelMap(np.zeros(reference.shape, dtype=np.uint8), reference.affine)
        annotated: tuple[str, ...] = ()
        unmapped = 0
    else:
        label, annotated, unmapped = report.label, report.annotated_organs, report.unmapped_voxels
    write_label(out_path, label)
    values, counts = label_value_counts(label.array)
    voxels = {table.name_of(int(v)): int(c) for v, c in zip(values, counts) if int(v) in table.values}
    return LabelSummary(
        case.case_id,
        Path(out_path),
        annotated,
        voxels,
        {o: n * label.voxel_volume_ml for o, n in voxels.items()},
        unmapped,
    )


@dataclass(frozen=True)
class PreprocessSummary:
    case_id: str
    path: Path
    grid_path: Path
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]


def preprocess_scan(raw_scan: Path, out_path: Path, grid_path: Path, config: PreprocessConfig) -> PreprocessSummary:
    """Preprocess a raw scan; write the [0, 1] volume and its GridRecord (JSON) atomically."""
    pre = preprocess_ct(read_ct(raw_scan), config)
    write_nifti(out_path, pre.array, pre.record.output.affine)
    atomic_write_text(grid_path, json.dumps(pre.record.to_dict()))
    return PreprocessSummary(
        Path(raw_scan).name.split(".")[0], Path(out_path), Path(grid_path), pre.record.output.shape, pre.record.output.spacing_mm
    )


def scan_preview(raw_scan: Path, label: Path | None = None, table: OrganTable | None = None) -> bytes:
    """PNG of the scan's most informative axial slice, with the label overlaid if given."""
    ct = read_ct(raw_scan)
    lab = None if label is None else np.asarray(read_label(label).array)
    return render_overview(ct.array, ct.affine, table or DEFAULT_ORGAN_TABLE, lab)


def write_scan_preview(out: Path, raw_scan: Path, label: Path | None = None, table: OrganTable | None = None) -> Path:
    """:func:`scan_preview` as a PNG file in the workspace (previews stay out of Dagster's event database)."""
    return atomic_write_bytes(out, scan_preview(raw_scan, label, table))


def ingest_case_scan(index: CampaignIndex, case_id: str, layout: WorkspaceLayout, catalog: Catalog) -> ScanSummary:
    """One case's scan into the workspace, and its rows in the ``cases`` and ``geometry`` tables."""
    case = index.case(case_id)
    summary = ingest_scan(case, layout.raw_scan(case_id))
    catalog.write("cases", case_id, pd.DataFrame([case_row(case)], columns=list(CASE_COLUMNS)))
    catalog.write("geometry", case_id, pd.DataFrame([summary.geometry_row()]))
    return summary


def ingest_case_label(index: CampaignIndex, case_id: str, table: OrganTable, layout: WorkspaceLayout) -> LabelSummary:
    """One case's original (partial) label, on its raw scan's grid."""
    return ingest_label(index.case(case_id), index.dataset_of(case_id), table, layout.raw_scan(case_id), layout.original_label(case_id))


def preprocess_case(case_id: str, layout: WorkspaceLayout, config: PreprocessConfig) -> PreprocessSummary:
    return preprocess_scan(layout.raw_scan(case_id), layout.preprocessed(case_id), layout.grid_record(case_id), config)
