"""A real PACS round trip: Orthanc + DICOMweb on 127.0.0.1, the real CT series, alqa's CLI.

The hospital's PACS holds the CT (stored here over STOW-RS). alqa pulls it as a
campaign dataset (``alqa pull-dicomweb``, QIDO-RS + WADO-RS), a reassembled
label is made for the case, and ``alqa export --format dicom-seg --stow`` writes
the DICOM-SEG and pushes it. The test then finds the SEG by QIDO-RS under the
source study, retrieves it with WADO-RS and reads it back with highdicom.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from alqa_core.catalog import Catalog
from alqa_core.config.template import write_template
from alqa_core.errors import AlqaInputError
from alqa_core.export.stow import stow_files
from alqa_core.ingest.dataset import read_dataset
from alqa_core.ingest.dicomweb import default_case_id, pull_dicomweb
from alqa_core.io.dicom import read_dicom_series
from alqa_core.io.dicomweb import dicomweb_client
from alqa_core.io.nifti import read_label, write_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.organs import class_map_preset, remap_labels
from alqa_core.volume import Grid, LabelMap
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.cli import main as alqa

from ..conftest import walk_round

pytestmark = [pytest.mark.integration]

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SOURCES = {"spleen": "original", "liver": "revised", "stomach": "confirmed"}


def _on_grid(label: LabelMap, grid: Grid) -> LabelMap:
    transform = ornt_transform(io_orientation(label.affine), io_orientation(grid.affine))
    moved = LabelMap(np.ascontiguousarray(apply_orientation(np.asarray(label.array), transform)), label.affine @ inv_ornt_aff(transform, label.shape))
    assert moved.grid.matches(grid)
    return LabelMap(moved.array, grid.affine)


@pytest.fixture
def pacs_study(orthanc, real_ct_dir, fill_series_uids, tmp_path) -> tuple[str, str, Path]:
    """The real series (UIDs written in) stored in Orthanc, as a hospital's PACS would hold it."""
    series = tmp_path / "hospital"
    shutil.copytree(real_ct_dir / "series", series)
    fill_series_uids(series)
    stowed = stow_files(orthanc["ALQA_ORTHANC_DICOMWEB"], sorted(series.iterdir()))
    assert len(stowed.stored) == 20
    first = pydicom.dcmread(min(series.iterdir()), stop_before_pixels=True)
    return str(first.StudyInstanceUID), str(first.SeriesInstanceUID), series


def test_pull_label_export_stow_and_find_the_seg_by_qido(orthanc, pacs_study, real_ct_dir, tmp_path, monkeypatch, capsys):
    url = orthanc["ALQA_ORTHANC_DICOMWEB"]
    study, series_uid, hospital = pacs_study

    # 1. pull: WADO-RS into a new dataset whose one case is a DICOM series folder
    dataset = tmp_path / "Dataset700_Pacs"
    assert alqa(["pull-dicomweb", url, "--study", study, "--series", series_uid, "--case", "realct", str(dataset)]) == 0
    record = read_dataset(dataset)
    assert record.case_ids == ("realct",) and record.cases[0].image_format == "dicom"
    assert json.loads((dataset / "dataset.json").read_text())["labels"] == {"background": 0}
    pulled, original = read_dicom_series(dataset / "imagesTr" / "realct"), read_dicom_series(hospital)
    assert pulled.grid.matches(original.grid) and np.array_equal(pulled.array, original.array)
    assert pydicom.dcmread(next((dataset / "imagesTr" / "realct").iterdir())).file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
    # pulling it again would overwrite: refused; a study without that CT: refused
    assert alqa(["pull-dicomweb", url, "--study", study, "--case", "realct", str(dataset)]) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(AlqaInputError, match="no CT series"):
        pull_dicomweb(url, "1.2.3.4.5", tmp_path / "none")
    assert not (tmp_path / "none").exists()
    # without --series: every CT series of the study (found by QIDO-RS), named from its UID; into the same dataset
    more = pull_dicomweb(url, study, dataset)
    assert [c.case_id for c in more.cases] == [default_case_id(series_uid)] and more.cases[0].n_instances == 20
    assert read_dataset(dataset).case_ids == tuple(sorted(("realct", default_case_id(series_uid))))
    assert json.loads((dataset / "dataset.json").read_text())["labels"] == {"background": 0}  # left as it was
    shutil.rmtree(more.cases[0].folder)  # one case is enough for the rest

    # 2. the campaign's reassembled label for the case (TotalSegmentator's organs), with provenance
    cfg = write_template(tmp_path / "campaign.yaml", name="pacs", workspace_root=str(tmp_path / "ws"), datasets=(str(dataset),),
                         architectures=(("unet", "tiny"),))
    layout = WorkspaceLayout(tmp_path / "ws")
    ts = read_label(real_ct_dir / "totalsegmentator_v2_labels.nii.gz")
    label = _on_grid(LabelMap(remap_labels(np.asarray(ts.array), class_map_preset("total"), T).array, ts.affine), pulled.grid)
    write_label(layout.reassembled_label("realct"), label)
    Catalog(layout.catalog).write("provenance", "realct", pd.DataFrame(
        [{"case_id": "realct", "organ": o, "source": SOURCES.get(o, "pseudo")} for o in T.names]))
    walk_round(Catalog(layout.catalog), 1, "queued", "a round is under way")

    # 3. export as DICOM-SEG and STOW it
    monkeypatch.setenv("ALQA_CAMPAIGN", str(cfg))
    monkeypatch.delenv("ALQA_WORKSPACE", raising=False)
    capsys.readouterr()
    assert alqa(["export", "--format", "dicom-seg", "--stow", url, str(tmp_path / "seg")]) == 0
    printed = capsys.readouterr().out
    print(printed)
    assert "stored 1 DICOM-SEG(s)" in printed and "10200004" in printed
    local = pydicom.dcmread(tmp_path / "seg" / "realct.dcm", stop_before_pixels=True)
    assert local.StudyInstanceUID == study

    # 4. QIDO-RS: the SEG is filed under the source study
    client = dicomweb_client(url)
    found = client.search_for_series(study_instance_uid=study, search_filters={"Modality": "SEG"})
    print("QIDO-RS answer for the SEG series:\n" + json.dumps(found, indent=1))
    assert [s["0020000E"]["Value"][0] for s in found] == [local.SeriesInstanceUID]
    assert found[0]["0020000D"]["Value"][0] == study and found[0]["00080060"]["Value"] == ["SEG"]
    assert found[0]["00081190"]["Value"][0].startswith(orthanc["ALQA_ORTHANC_URL"] + "/dicom-web/studies/" + study)
    everything = client.search_for_series(study_instance_uid=study)
    assert {s["00080060"]["Value"][0] for s in everything} == {"CT", "SEG"}
    instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=local.SeriesInstanceUID)
    assert [i["00080016"]["Value"][0] for i in instances] == [SEG_STORAGE]
    # 5. WADO-RS: what the PACS serves is the SEG alqa wrote, referencing the series the PACS holds
    back = hd.seg.Segmentation.from_dataset(client.retrieve_series(study, local.SeriesInstanceUID)[0])
    assert back.SOPInstanceUID == local.SOPInstanceUID
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    table = [(n, back.get_segment_description(n).segment_label, back.get_segment_description(n).segmented_property_type.value,
              back.get_segment_description(n).algorithm_type.value) for n in back.segment_numbers]
    print("segment table:", table)
    assert table == [(1, "spleen", "78961009", "MANUAL"), (2, "liver", "10200004", "MANUAL"), (3, "stomach", "69695003", "SEMIAUTOMATIC"),
                     (4, "aorta", "15825003", "AUTOMATIC"), (5, "inferior_vena_cava", "64131007", "AUTOMATIC"),
                     (6, "pancreas", "15776009", "AUTOMATIC")]
    # pushing the same export again stores nothing new (same content, same UIDs)
    stow_files(url, [tmp_path / "seg" / "realct.dcm"])
    assert len(client.search_for_instances(study_instance_uid=study, series_instance_uid=local.SeriesInstanceUID)) == 1


def test_a_file_the_pacs_does_not_store_is_an_error(orthanc, real_ct_dir):
    # the shared series as it is: empty Study/Series/SOP UIDs; Orthanc answers 200 and stores nothing
    first = min((real_ct_dir / "series").iterdir())
    with pytest.raises(AlqaInputError, match="did not store") as err:
        stow_files(orthanc["ALQA_ORTHANC_DICOMWEB"], [first])
    assert err.value.path == str(first)
    with pytest.raises(AlqaInputError, match="http"):
        stow_files("pacs.example/dicom-web", [first])
