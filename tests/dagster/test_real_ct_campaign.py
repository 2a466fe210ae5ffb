"""The first thing a lab tries: an unlabeled real CT (a DICOM series) and two external tools' outputs, no training.

The real series of ../shared/data is the only case; "tool A" is TotalSegmentator's label map (class map
``total``), "tool B" the same missing part of the liver. Every asset of the round succeeds (training says
why it skipped), attention points at the liver's rim, the case is queued, and the export holds the labelled case.
"""

from __future__ import annotations

import json
import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from alqa_core.annotation.labelled.rounds import round_state
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.export.nnunet import export_nnunet
from alqa_core.io.nifti import read_label, write_nifti
from alqa_core.rounds import read_rounds
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.definitions import defs
from alqa_dagster.defs.automation import ROUND_ASSETS

from .conftest import campaign_yaml, make_resources

LIVER_TOTAL = 5  # TotalSegmentator v2 numbering


@pytest.mark.slow
def test_external_members_round_on_unlabeled_real_ct(tmp_path, real_ct_dir, instance):
    root = tmp_path / "Dataset010_RealCT"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}))
    shutil.copytree(real_ct_dir / "series", root / "imagesTr" / "realct")
    ts = read_label(real_ct_dir / "totalsegmentator_v2_labels.nii.gz")
    write_nifti(root / "predictions" / "toolA" / "realct.nii.gz", np.asarray(ts.array), ts.affine)
    missed = np.array(ts.array)
    liver = missed == LIVER_TOTAL
    cut = int(np.median(np.nonzero(liver)[1]))
    missed[:, :cut][liver[:, :cut]] = 0  # tool B misses the part of the liver on one side of a plane
    write_nifti(root / "predictions" / "toolB" / "realct.nii.gz", missed, ts.affine)

    cfg_path = campaign_yaml(tmp_path, tmp_path, architectures=(), datasets=(str(root),))
    members = "external_members:\n  - name: toolA\n    class_map: total\n  - name: toolB\n    class_map: total"
    cfg_path.write_text(cfg_path.read_text().replace("external_members: []", members))
    resources = make_resources(cfg_path)
    instance.add_dynamic_partitions("cases", ["realct"])
    d = defs()
    for selection in (["raw_scans", "original_labels", "preprocessed_volumes"], ROUND_ASSETS):
        result = dg.materialize(list(d.assets) + list(d.asset_checks), selection=selection, instance=instance, resources=resources, partition_key="realct" if len(selection) == 3 else None,
                                tags={} if len(selection) == 3 else {"dagster/asset_partition_range_start": "realct", "dagster/asset_partition_range_end": "realct"})
        assert result.success

    cat, layout = Catalog(tmp_path / "ws" / "catalog"), WorkspaceLayout(tmp_path / "ws")
    rec = read_rounds(cat)[0]
    assert rec.facts["members_trained"] == 0 and rec.entered_at.keys() >= {"opened", "trained", "predicted", "queued"}
    organ = cat.read("attention_organ").set_index("organ")
    liver_ml = float(organ.attention_ml["liver"])
    assert liver_ml > 0 and float(organ.attention_ml["spleen"]) == 0.0  # the tools disagree on the liver only
    assert round_state(cat).queue == ("realct",) and round_state(cat).state == "queued"
    export = export_nnunet(layout, tmp_path / "export", load_campaign(cfg_path))
    prov = pd.read_csv(tmp_path / "export" / "provenance.csv")
    assert export.cases == ("realct",) and set(prov.source) == {"pseudo"} and set(prov.pseudo_round) == {0}
    liver = np.asarray(read_label(tmp_path / "export" / "labelsTr" / "realct.nii.gz").array) == 5
    assert liver.sum() > 1000  # the averaged tools keep the liver
    print(f"\nreal CT, external members only: liver attention {liver_ml:.1f} mL; queue {round_state(cat).queue}; "
          f"export {export.cases}; coverage\n{export.coverage.to_string(index=False)}")
