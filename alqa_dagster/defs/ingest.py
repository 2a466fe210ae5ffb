"""The ingest stage (group ``ingest``): raw scans, original (partial) labels, preprocessed volumes, per case."""

from pathlib import Path

import dagster as dg
import pandas as pd

from alqa_core.ingest.cases import index_campaign, ingest_label, ingest_scan, preprocess_scan, scan_preview
from alqa_dagster.metadata import numbers, png_markdown
from alqa_dagster.policies import CASE_BATCHES, cases_partitions
from alqa_dagster.resources import CampaignResource, CatalogResource, WorkspaceResource


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    group_name="ingest",
    kinds={"nifti", "dicom"},
    description="The case's CT as clean int16 HU NIfTI (from NIfTI or a DICOM series), no PHI in the header.",
)
def raw_scans(
    context: dg.AssetExecutionContext, campaign: CampaignResource, workspace: WorkspaceResource, catalog: CatalogResource
) -> dict[str, Path]:
    index, layout, cat = index_campaign(campaign.config()), workspace.layout(), catalog.catalog()
    out = {}
    for case_id in context.partition_keys:
        case = index.cases[case_id]
        summary = ingest_scan(case, layout.raw_scan(case_id))
        cat.write("cases", case_id, index.cases_frame().query("case_id == @case_id"))
        cat.write("geometry", case_id, pd.DataFrame([summary.geometry_row()]))
        meta = {"dataset": case.dataset, "split": case.split, "shape": str(summary.shape), "preview": png_markdown(scan_preview(summary.path))}
        context.add_asset_metadata({**meta, **numbers(dict(zip(("spacing_i_mm", "spacing_j_mm", "spacing_k_mm"), summary.spacing_mm)))}, partition_key=case_id)
        out[case_id] = summary.path
    return out


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    group_name="ingest",
    kinds={"nifti"},
    description="The dataset's own (partial) label, remapped onto the organ table on the scan's grid. "
    "Unlabeled cases get an empty map whose annotated organs are none.",
)
def original_labels(
    context: dg.AssetExecutionContext,
    campaign: CampaignResource,
    workspace: WorkspaceResource,
    raw_scans: dict[str, Path],
) -> dict[str, Path]:
    cfg, layout = campaign.config(), workspace.layout()
    index = index_campaign(cfg)
    out = {}
    for case_id, scan_path in raw_scans.items():
        s = ingest_label(index.cases[case_id], index.dataset_of(case_id), cfg.organ_table, scan_path, layout.original_label(case_id))
        meta = {"annotated_organs": ", ".join(s.annotated_organs) or "none", "unmapped_voxels": s.unmapped_voxels, "preview": png_markdown(scan_preview(scan_path, s.path, cfg.organ_table))}
        context.add_asset_metadata({**meta, **numbers(s.organ_ml, "ml_")}, partition_key=case_id)
        out[case_id] = s.path
    return out


@dg.asset(
    partitions_def=cases_partitions,
    backfill_policy=CASE_BATCHES,
    io_manager_key="volume_paths",
    group_name="ingest",
    kinds={"nifti"},
    description="RAS, HU window scaled to [0, 1], resampled to the campaign spacing, cropped to the body; "
    "a .grid.json beside it records how to map outputs back to the raw scan's grid.",
)
def preprocessed_volumes(
    context: dg.AssetExecutionContext, campaign: CampaignResource, workspace: WorkspaceResource, raw_scans: dict[str, Path]
) -> dict[str, Path]:
    cfg, layout = campaign.config(), workspace.layout()
    out = {}
    for case_id, scan_path in raw_scans.items():
        s = preprocess_scan(scan_path, layout.preprocessed(case_id), layout.grid_record(case_id), cfg.preprocess)
        context.add_asset_metadata({"shape": str(s.shape), **numbers(dict(zip(("spacing_i_mm", "spacing_j_mm", "spacing_k_mm"), s.spacing_mm)))}, partition_key=case_id)
        out[case_id] = s.path
    return out
