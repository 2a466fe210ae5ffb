"""The export is the labelled dataset: every ingested case or a refusal naming the missing ones, with a dataset card."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from alqa_core.case_errors import record_case_error
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig, DatasetSource
from alqa_core.errors import AlqaInputError
from alqa_core.export.nnunet import export_nnunet
from alqa_core.io.nifti import write_ct, write_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import CTVolume, LabelMap
from alqa_core.workspace import WorkspaceLayout

from ...conftest import walk_round

AFF = np.diag([2.0, 2.0, 3.0, 1.0])
SHAPE = (12, 10, 6)


def _workspace(tmp_path, cases=("a", "b", "c")):
    layout, cat = WorkspaceLayout(tmp_path / "ws"), Catalog(tmp_path / "ws" / "catalog")
    rows = []
    for c in cases:
        write_ct(layout.raw_scan(c), CTVolume(np.zeros(SHAPE, np.float32), AFF))
        rows.append({"case_id": c, "dataset": "D", "split": "train", "annotated_organs": "liver"})
    cat.write("cases", "all", pd.DataFrame(rows))
    walk_round(cat, 0, "queued", "1 case queued")
    return layout, cat


def _label(layout, cat, case, sources, annotator=None):
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:6, 2:6, 1:4] = T.value_of("liver")
    write_label(layout.reassembled_label(case), LabelMap(lab, AFF))
    rows = [{"case_id": case, "organ": o, "source": sources.get(o, "pseudo"), "annotator": annotator if sources.get(o) in ("revised", "confirmed") else None,
             "volume_ml": 1.0, "pseudo_round": 0, "submission_id": None, "superseded": ""} for o in T.names]
    cat.write("provenance", case, pd.DataFrame(rows))


def _config(layout):
    return CampaignConfig(name="c", workspace_root=layout.root, datasets=(DatasetSource(layout.root),), organ_table=T)


def test_a_case_without_a_label_is_refused_by_name_unless_partial(tmp_path):
    layout, cat = _workspace(tmp_path)
    _label(layout, cat, "a", {"liver": "original"})
    _label(layout, cat, "b", {"liver": "original", "spleen": "revised"}, "dr_a")
    with pytest.raises(AlqaInputError, match=r"1 ingested case\(s\) have no reassembled label: c"):
        export_nnunet(layout, tmp_path / "out", _config(layout))
    assert not (tmp_path / "out").exists()  # nothing half-written
    result = export_nnunet(layout, tmp_path / "out", _config(layout), partial=True)
    assert result.cases == ("a", "b") and result.missing == ("c",)
    assert sorted(p.name for p in (tmp_path / "out" / "labelsTr").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["numTraining"] == 2
    summary = pd.read_csv(tmp_path / "out" / "organ_summary.csv").set_index("organ")
    assert summary.loc["liver", "original"] == 2 and summary.loc["spleen", "revised"] == 1 and summary.loc["spleen", "pseudo"] == 1
    assert summary.loc["spleen", "human_share"] == 0.5
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Without a reassembled label (exported with --partial): c" in card and "| spleen | 0 | 1 | 0 | 1 |" in card
    assert result.render().splitlines()[1] == "left out (no reassembled label, --partial): c"


def test_every_ingested_case_and_the_refused_ones_listed(tmp_path):
    layout, cat = _workspace(tmp_path, cases=("a", "b"))
    for c in ("a", "b"):
        _label(layout, cat, c, {"liver": "original"})
    record_case_error(cat, "bad", "raw_scans", "/data/bad_0000.nii.gz", "truncated gzip")
    result = export_nnunet(layout, tmp_path / "out", _config(layout))
    assert result.cases == ("a", "b") and not result.missing
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| bad | raw_scans | /data/bad_0000.nii.gz | truncated gzip |" in card
    assert "| 0 | queued | 1 |" in card  # the rounds table
    with pytest.raises(AlqaInputError, match="never overwrites"):
        export_nnunet(layout, tmp_path / "out", _config(layout))
