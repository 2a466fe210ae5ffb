"""The ingest stage (group ``ingest``): raw scans, original (partial) labels, preprocessed volumes, per case.

A case whose scan or label is refused is recorded in the ``case_errors`` table
with its file and reason and left out of everything downstream; the other
cases of the batch go on (:func:`alqa_core.case_errors.run_per_case`).
"""

from pathlib import Path

import dagster as dg

from alqa_core.case_errors import run_per_case
from alqa_core.ingest.cases import index_campaign, ingest_case_label, ingest_case_scan, preprocess_case, write_scan_preview
from alqa_dagster.metadata import refusals, run_summary
from alqa_dagster.policies import CASE_BATCHES, cases_partitions
from alqa_dagster.resources import WorkspaceResource


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    group_name="ingest",
    kinds={"nifti", "dicom"},
    description="The case's CT as clean int16 HU NIfTI (from NIfTI or a DICOM series), no PHI in the header. "
    "A refused scan is recorded in case_errors (file, reason); the batch goes on.",
)
def raw_scans(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dict[str, Path]:
    cfg, layout, cat = workspace.open()
    index = index_campaign(cfg)
    batch = run_per_case(cat, "raw_scans", context.partition_keys, lambda c: ingest_case_scan(index, c, layout, cat), _source(index, "image_path"))
    rows = [{"case_id": c, "shape": str(s.shape), **dict(zip(SPACING, s.spacing_mm)), "preview": str(write_scan_preview(layout.preview("raw_scans", c), s.path))} for c, s in batch.done.items()]
    run_summary(context, rows, refused=len(batch.failed))
    refusals(context, batch.failed)
    return {c: s.path for c, s in batch.done.items()}


SPACING = ("spacing_i_mm", "spacing_j_mm", "spacing_k_mm")


def _source(index, field: str):
    """The file a stage reads for a case (recorded with a refusal, so a fixed file is noticed and retried)."""
    return lambda case_id: getattr(index.cases[case_id], field) if case_id in index.cases else None


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    group_name="ingest",
    kinds={"nifti"},
    description="The dataset's own (partial) label, remapped onto the organ table on the scan's grid. "
    "Unlabeled cases get an empty map whose annotated organs are none; label values dataset.json does not name are refused.",
)
def original_labels(context: dg.AssetExecutionContext, workspace: WorkspaceResource, raw_scans: dict[str, Path]) -> dict[str, Path]:
    cfg, layout, cat = workspace.open()
    index = index_campaign(cfg)
    batch = run_per_case(cat, "original_labels", raw_scans, lambda c: ingest_case_label(index, c, cfg.organ_table, layout), _source(index, "label_path"))
    rows = [
        {"case_id": c, "annotated_organs": ", ".join(s.annotated_organs) or "none", "unmapped_voxels": s.unmapped_voxels, **{f"ml_{o}": v for o, v in s.organ_ml.items()},
         "preview": str(write_scan_preview(layout.preview("original_labels", c), raw_scans[c], s.path, cfg.organ_table))}
        for c, s in batch.done.items()
    ]
    run_summary(context, rows, refused=len(batch.failed), unmapped_voxels=int(sum(s.unmapped_voxels for s in batch.done.values())))
    refusals(context, batch.failed)
    return {c: s.path for c, s in batch.done.items()}


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    group_name="ingest",
    kinds={"nifti"},
    description="RAS, HU window scaled to [0, 1], resampled to the campaign spacing, cropped to the body; "
    "a .grid.json beside it records how to map outputs back to the raw scan's grid.",
)
def preprocessed_volumes(context: dg.AssetExecutionContext, workspace: WorkspaceResource, raw_scans: dict[str, Path]) -> dict[str, Path]:
    cfg, layout, cat = workspace.open()
    batch = run_per_case(cat, "preprocessed_volumes", raw_scans, lambda c: preprocess_case(c, layout, cfg.preprocess))
    run_summary(context, [{"case_id": c, "shape": str(s.shape), **dict(zip(SPACING, s.spacing_mm))} for c, s in batch.done.items()], refused=len(batch.failed))
    refusals(context, batch.failed)
    return {c: s.path for c, s in batch.done.items()}
