"""Ingest assets materialize for real on a phantom campaign, batched over partitions."""

from __future__ import annotations

import dagster as dg
import nibabel as nib
import numpy as np

from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.ingest.cases import index_campaign
from alqa_dagster.defs.checks import original_labels_on_raw_grid
from alqa_dagster.defs.ingest import original_labels, preprocessed_volumes, raw_scans

from .conftest import campaign_yaml, make_resources


def test_ingest_assets_over_a_partition_range(tmp_path, phantom_campaign, instance):
    cfg_path = campaign_yaml(tmp_path, phantom_campaign)
    cfg = load_campaign(cfg_path)
    case_ids = sorted(index_campaign(cfg).cases)
    instance.add_dynamic_partitions("cases", case_ids)
    result = dg.materialize(
        [raw_scans, original_labels, preprocessed_volumes, original_labels_on_raw_grid],
        instance=instance,
        resources=make_resources(cfg_path),
        tags={"dagster/asset_partition_range_start": case_ids[0], "dagster/asset_partition_range_end": case_ids[-1]},
    )
    assert result.success
    mats = result.asset_materializations_for_node("raw_scans")
    assert sorted(m.partition for m in mats) == case_ids  # one run, every partition
    ws = tmp_path / "ws"
    for case_id in case_ids:
        img = nib.load(ws / "raw_scans" / f"{case_id}.nii.gz")
        assert img.header["descrip"].tobytes().rstrip(b"\0") == b"alqa"
        lab = nib.load(ws / "original_labels" / f"{case_id}.nii.gz")
        np.testing.assert_allclose(img.affine, lab.affine, atol=1e-6)
        assert (ws / "preprocessed_volumes" / f"{case_id}.grid.json").exists()
    cat = Catalog(ws / "catalog")
    assert sorted(cat.read("cases").case_id) == case_ids
    # a partial-label dataset's cases annotate only its organs
    liver_cases = cat.query("SELECT annotated_organs FROM cases WHERE dataset LIKE '%Liver%' AND has_label")
    assert set(liver_cases.annotated_organs) <= {"liver"}
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["checked"].value == len(case_ids)
    # one summary event per run and asset, not metadata per case: its first rows link each case's preview by path
    observations = [e.asset_observation_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    summary = {o.asset_key.path[-1]: o.metadata for o in observations}
    assert sorted(summary) == ["original_labels", "preprocessed_volumes", "raw_scans"] and len(observations) == 3
    md = summary["raw_scans"]
    assert md["cases_done"].value == len(case_ids) and md["refused"].value == 0
    rows = md["per_case"].value.records
    assert [r.data["case_id"] for r in rows] == case_ids
    # previews are PNG files in the workspace, linked by path (no anatomy images in the event database)
    preview = rows[0].data["preview"]
    assert preview.startswith(str(ws / "previews" / "raw_scans")) and open(preview, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not any("data:image" in str(v.value) for o in observations for v in o.metadata.values())
    # the per-case materializations carry no per-case metadata payload (the catalog has the facts)
    assert all(set(m.metadata) <= {"files"} for m in mats)
