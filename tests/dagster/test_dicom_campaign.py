"""A DICOM campaign end to end: DICOM series in, a round, work packages, a submission, DICOM-SEG out.

The phantom campaign's CTs are rewritten as DICOM CT series (pydicom, each
with its own patient and study), so every case of every dataset is a DICOM
series folder, as a hospital's export would be. The round runs through real
materializations and the submissions sensor, as in test_round; ``alqa export
--format dicom-seg`` then writes a SEG for the case with a reassembled label
and reports the others. The SEG is read back onto the reassembled label's grid.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import dagster as dg
import highdicom as hd
import numpy as np
import pydicom
import pytest

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.annotation.queue.packages import newest_package
from alqa_core.annotation.labelled.rounds import round_state
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.ingest.cases import index_campaign
from alqa_core.io.dicom import LPS_TO_RAS
from alqa_core.io.nifti import read_ct, read_label, write_nifti
from alqa_core.phantoms.dicom_series import SeriesIdentity, write_dicom_series
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.cli import main as alqa
from alqa_dagster.definitions import defs
from alqa_dagster.defs.automation import ROUND_ASSETS, submissions_sensor

from .conftest import campaign_yaml, make_resources

ALGORITHM_TYPE = {"original": "MANUAL", "revised": "MANUAL", "confirmed": "SEMIAUTOMATIC", "pseudo": "AUTOMATIC"}


def _materialize(instance, resources, selection, keys=None, partition=None, tags=None):
    run_tags = dict(tags or {})
    if keys:
        run_tags.update({"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
    d = defs()
    result = dg.materialize(list(d.assets) + list(d.asset_checks), selection=selection, instance=instance, resources=resources,
                            tags=run_tags, partition_key=partition)
    assert result.success


def dicom_campaign(phantom_campaign: Path, root: Path) -> Path:
    """The phantom campaign with every CT rewritten as a DICOM series folder ``images*/<case>/``."""
    shutil.copytree(phantom_campaign, root)
    for image in sorted((root / "datasets").glob("*/images*/*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        write_dicom_series(read_ct(image), image.parent / case, SeriesIdentity(case, patient_id=f"PAT-{case}", patient_name=f"Phantom^{case}"))
        image.unlink()
    return root


@pytest.mark.slow
def test_dicom_campaign_round_submission_and_dicom_seg_export(tmp_path, phantom_campaign, instance, monkeypatch, capsys):
    campaign = dicom_campaign(phantom_campaign, tmp_path / "campaign")
    cfg_path = campaign_yaml(tmp_path, campaign)
    resources = make_resources(cfg_path)
    index = index_campaign(load_campaign(cfg_path))
    assert {c.image_format for c in index.cases.values()} == {"dicom"}
    keys = sorted(index.cases)
    instance.add_dynamic_partitions("cases", keys)
    _materialize(instance, resources, ["raw_scans", "original_labels", "preprocessed_volumes"], keys)
    _materialize(instance, resources, ROUND_ASSETS, keys)

    # work packages for the queue, a revision of the top case through the inbox and the sensor
    cat = Catalog(tmp_path / "ws" / "catalog")
    state = round_state(cat)
    case_id = state.queue[0]
    assert json.loads((newest_package(WorkspaceLayout(tmp_path / "ws"), case_id).folder / "task.json").read_text())["case_id"] == case_id
    truth = read_label(campaign / "ground_truth" / "labelsTr" / f"{case_id}.nii.gz")
    assert truth.grid.matches(read_ct(tmp_path / "ws" / "raw_scans" / f"{case_id}.nii.gz").grid)
    revised = tmp_path / "revised.nii.gz"
    write_nifti(revised, np.asarray(truth.array), truth.affine)
    write_submission(tmp_path / "ws" / "inbox", case_id, "dr_dicom", revised, emptied_organs=tuple(resources["campaign"].config().organ_table.names))
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        result = submissions_sensor(ctx)
    assert [r.partition_key for r in result.run_requests] == [case_id]
    _materialize(instance, resources, ["revised_labels", "reassembled_labels"], partition=case_id,
                 tags={"dagster/run_key": result.run_requests[0].run_key})

    # DICOM-SEG export through the CLI: every case was reassembled in the round, so every case gets one
    monkeypatch.setenv("ALQA_CAMPAIGN", str(cfg_path))
    monkeypatch.delenv("ALQA_WORKSPACE", raising=False)
    assert alqa(["export", "--format", "dicom-seg", str(tmp_path / "seg")]) == 0
    assert f"exported {len(keys)} DICOM-SEG(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == sorted(f"{k}.dcm" for k in keys)  # every case reassembled each round

    # read back: every segment on the reassembled label's grid, through its source slice; Dice 1.0
    label = read_label(tmp_path / "ws" / "reassembled_labels" / f"{case_id}.nii.gz")
    series = index.cases[case_id].image_path
    sources = hd.spatial.sort_datasets([pydicom.dcmread(p, stop_before_pixels=True) for p in series.iterdir()])
    seg = hd.seg.segread(tmp_path / "seg" / f"{case_id}.dcm")
    pixels = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], combine_segments=True,
                                               assert_missing_frames_are_empty=True)
    table = resources["campaign"].config().organ_table
    present = [o for o in table.organs if np.any(np.asarray(label.array) == o.value)]
    assert seg.segment_numbers == list(range(1, len(present) + 1)) and len(present) >= 5
    inv = np.linalg.inv(label.affine)
    back = {n: np.zeros(label.shape, bool) for n in seg.segment_numbers}
    for f, src in enumerate(sources):  # each source slice lies on one k of the label grid
        ijk = inv @ LPS_TO_RAS @ np.array([*map(float, src.ImagePositionPatient), 1.0])
        assert np.allclose(ijk[:2], 0, atol=1e-3) and abs(ijk[2] - round(ijk[2])) < 1e-3
        for n, mask in back.items():
            mask[:, :, round(ijk[2])] = (pixels[f] == n).T  # pixels [row, column] -> label [i=column, j=row]
    prov = cat.read("provenance").query("case_id == @case_id").set_index("organ").source.to_dict()
    for n, organ in zip(seg.segment_numbers, present):
        truth_mask = np.asarray(label.array) == organ.value
        assert 2 * np.count_nonzero(back[n] & truth_mask) / (back[n].sum() + truth_mask.sum()) == 1.0, organ.name
        desc = seg.get_segment_description(n)
        assert desc.segment_label == organ.name and desc.segmented_property_type.value == organ.code.code
        assert desc.algorithm_type.value == ALGORITHM_TYPE[prov[organ.name]], organ.name
    assert "revised" in set(prov.values())
    # the SEG is filed with the case's own patient and study; the raw scan alqa works on carries neither
    assert seg.PatientID == f"PAT-{case_id}" and seg.StudyInstanceUID == sources[0].StudyInstanceUID
    raw = gzip.decompress((tmp_path / "ws" / "raw_scans" / f"{case_id}.nii.gz").read_bytes())
    assert f"PAT-{case_id}".encode() not in raw and sources[0].StudyInstanceUID.encode() not in raw
