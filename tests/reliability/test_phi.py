"""No patient-identifying data leaves ingest: raw scans, labels, preprocessed volumes, work packages, exports.

The one exception, by design: a DICOM-SEG (``alqa export --format dicom-seg``)
carries the source's patient and study identifiers, so that a PACS files it
with the study; it is written only on that explicit export, and nothing else
gains them.

The real series in ../shared/data is already de-identified (its name, id,
birth date and institution are empty), so a copy gets identifying values
written into every slice with pydicom, beside the real values it does carry
(the institution's address, the study date). A NIfTI case gets the same values
in its header's ``descrip``, ``aux_file``, ``intent_name`` and ``db_name``.
Every byte of every file alqa then writes is searched for them: raw, gunzipped
(NIfTI, the .seg.nrrd payload), and Parquet tables as text. The search is
first run on the inputs, where it must find them.
"""

from __future__ import annotations

import gzip
import json
import shutil
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from alqa_core.annotation.labelled.reassembly import reassemble
from alqa_core.annotation.queue.work_package import write_work_package
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig, DatasetSource
from alqa_core.config.sections import PreprocessConfig
from alqa_core.export.dicom_seg import export_dicom_seg
from alqa_core.export.nnunet import export_nnunet
from alqa_core.ingest.cases import CampaignIndex, ingest_label, ingest_scan, preprocess_scan
from alqa_core.ingest.dataset import read_dataset
from alqa_core.io.nifti import read_ct, read_label, write_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.workspace import WorkspaceLayout

from .conftest import AFFINE, phantom_ct, phantom_label

INJECTED = {
    "PatientName": "Doe^Jane^Quincy",
    "PatientID": "PHI-ID-7731-0042",
    "PatientBirthDate": "19420317",
    "InstitutionName": "Saint Example Hospital",
    "OtherPatientIDs": "MRN-55512-ALT",
    "ReferringPhysicianName": "Smith^Alfred",
}
#: tags whose real values (when the source has any) must not leave ingest either
IDENTIFYING = (*INJECTED, "InstitutionAddress", "StudyDate", "AccessionNumber", "PatientAddress")


def _variants(value: str) -> set[bytes]:
    """The spellings a leak could take (DICOM ^ separators, ISO dates, line breaks), 8+ characters only."""
    out = {value, value.replace("^", " "), value.replace("^", ", ")}
    if len(value) == 8 and value.isdigit():
        out.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
    for line in value.replace("\r", "\n").split("\n"):
        out.add(line.strip())
    return {v.encode("utf-8") for v in out if len(v) >= 8}


def _contents(path: Path) -> list[bytes]:
    """The bytes to search: raw, gunzipped, the NRRD payload, Parquet as text."""
    raw = path.read_bytes()
    out = [raw]
    if raw[:2] == b"\x1f\x8b":
        out.append(gzip.decompress(raw))
    if path.name.endswith(".nrrd") and b"\n\n" in raw:
        out.append(zlib.decompress(raw.split(b"\n\n", 1)[1], 16 + zlib.MAX_WBITS))
    if path.suffix == ".parquet":
        out.append(pd.read_parquet(path).to_csv(index=False).encode())
    return out


def _leaks(roots, tokens: dict[str, set[bytes]]) -> list[str]:
    found = []
    for root in roots:
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            blobs = [b.lower() for b in _contents(path)]
            for tag, spellings in tokens.items():
                if any(s.lower() in b for s in spellings for b in blobs):
                    found.append(f"{path}: {tag}")
    return found


def _nifti_header_text(path: Path) -> dict[str, bytes]:
    hdr = nib.load(str(path)).header
    return {k: bytes(np.asarray(hdr[k]).tobytes()).rstrip(b"\x00") for k in ("descrip", "aux_file", "intent_name", "db_name")}


@pytest.fixture
def phi_dataset(real_ct_dir, tmp_path) -> tuple[Path, dict[str, set[bytes]]]:
    """A dataset: the real series with identifying tags written in, and a NIfTI case with them in its header."""
    root = tmp_path / "Dataset004_PHI"
    series = root / "imagesTr" / "realct"
    shutil.copytree(real_ct_dir / "series", series)
    real = pydicom.dcmread(sorted(series.iterdir())[0], stop_before_pixels=True)
    tokens = {tag: _variants(str(real.get(tag) or "")) for tag in IDENTIFYING if str(real.get(tag) or "")}
    for path in sorted(series.iterdir()):
        ds = pydicom.dcmread(path)
        for tag, value in INJECTED.items():
            setattr(ds, tag, value)
        ds.save_as(path)
    tokens.update({tag: _variants(value) for tag, value in INJECTED.items()})
    (root / "labelsTr").mkdir()
    shutil.copyfile(real_ct_dir / "totalsegmentator_v2_labels.nii.gz", root / "labelsTr" / "realct.nii.gz")
    leak = f"{INJECTED['PatientName']} {INJECTED['PatientBirthDate']}".encode()
    for rel, array in (("imagesTr/phantom_0000.nii.gz", phantom_ct(0).astype(np.int16)), ("labelsTr/phantom.nii.gz", phantom_label())):
        img = nib.Nifti1Image(array, AFFINE)
        img.header["descrip"] = leak[:79]
        img.header["aux_file"] = INJECTED["PatientID"].encode()
        img.header["intent_name"] = INJECTED["PatientBirthDate"].encode()
        img.header["db_name"] = INJECTED["PatientID"].encode()[:17]
        nib.save(img, str(root / rel))
    meta = {"labels": {"background": 0, "spleen": 1, "liver": 5}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
            "alqa": {"class_map": "total"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root, tokens


def _config(layout: WorkspaceLayout, root: Path) -> CampaignConfig:
    return CampaignConfig(name="phi", workspace_root=layout.root, datasets=(DatasetSource(root),), organ_table=T)


def _campaign_steps(tmp_path: Path, root: Path) -> tuple[WorkspaceLayout, dict]:
    """Ingest, preprocess, a work package and a reassembled label (with provenance) for every case of ``root``."""
    layout = WorkspaceLayout(tmp_path / "ws")
    cat = Catalog(layout.catalog)
    ds = read_dataset(root, T)
    packages = {}
    for case in ds.cases:
        s = ingest_scan(case, layout.raw_scan(case.case_id))
        cat.write("geometry", case.case_id, pd.DataFrame([s.geometry_row()]))
        lab = ingest_label(case, ds, T, s.path, layout.original_label(case.case_id))
        preprocess_scan(s.path, layout.preprocessed(case.case_id), layout.grid_record(case.case_id), PreprocessConfig(spacing_mm=(6.0, 6.0, 6.0)))
        ct, original = read_ct(s.path), read_label(lab.path)
        attention = np.zeros((len(T.names), *ct.shape), np.uint8)
        packages[case.case_id] = write_work_package(layout.work_packages(case.case_id), case.case_id, 0, ct, original, attention, ("liver",), T)
        result = reassemble(case.case_id, T, original, original, lab.annotated_organs, None)
        write_label(layout.reassembled_label(case.case_id), result.label)
        cat.write("provenance", case.case_id, pd.DataFrame(result.to_records()))
    cat.write("cases", "all", CampaignIndex((ds,)).cases_frame())
    return layout, packages


def test_ingest_work_packages_and_export_carry_no_identifying_data(tmp_path, phi_dataset):
    root, tokens = phi_dataset
    assert {"PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "InstitutionAddress"} <= set(tokens)
    # the detector finds the identifying values where they are: in the inputs
    leaked_inputs = _leaks([root], tokens)
    assert any("PatientName" in f for f in leaked_inputs) and any("InstitutionAddress" in f for f in leaked_inputs)
    assert any("phantom_0000.nii.gz: PatientID" in f for f in leaked_inputs)

    layout, packages = _campaign_steps(tmp_path, root)
    export = export_nnunet(layout, tmp_path / "export", _config(layout, root))
    assert sorted(export.cases) == ["phantom", "realct"]
    produced = [p for p in list(layout.root.rglob("*")) + list((tmp_path / "export").rglob("*")) if p.is_file()]
    assert len(produced) > 20

    leaks = _leaks([layout.root, tmp_path / "export"], tokens)
    assert leaks == [], leaks
    for path in produced:
        if path.name.endswith((".nii.gz", ".nii")):
            fields = _nifti_header_text(path)
            assert fields["descrip"] in (b"", b"alqa"), (path, fields)
            assert fields["aux_file"] == fields["intent_name"] == fields["db_name"] == b"", (path, fields)
    nrrd = packages["realct"].folder / "pseudo_label.seg.nrrd"
    header = nrrd.read_bytes().split(b"\n\n", 1)[0].decode("ascii")
    fields = [line for line in header.splitlines()[1:] if not line.startswith("#")]  # comments: pynrrd's boilerplate
    assert all(line.split(":")[0].split("_")[0] in NRRD_KEYS for line in fields), header
    task = json.loads((packages["realct"].folder / "task.json").read_text())
    assert set(task) == {"case_id", "round", "package_id", "created_at", "pseudo_label_sha256", "organs_to_fix", "files", "labels", "how_to_submit"}


def test_the_dicom_seg_is_the_one_output_that_carries_identity(tmp_path, phi_dataset, fill_series_uids):
    """A DICOM-SEG carries the source's patient and study (so a PACS files it with the study), on explicit export only."""
    root, tokens = phi_dataset
    series = fill_series_uids(root / "imagesTr" / "realct")
    source = pydicom.dcmread(min(series.iterdir()), stop_before_pixels=True)
    tokens = {**tokens, "StudyInstanceUID": _variants(str(source.StudyInstanceUID)), "SeriesInstanceUID": _variants(str(source.SeriesInstanceUID))}
    layout, _ = _campaign_steps(tmp_path, root)
    export_nnunet(layout, tmp_path / "export", _config(layout, root))
    before = {p: p.stat().st_mtime_ns for p in layout.root.rglob("*") if p.is_file()}

    seg = export_dicom_seg(layout, tmp_path / "seg", read_dataset(root, T).cases, T)
    assert [c.case_id for c in seg.written] == ["realct"] and dict(seg.skipped).keys() == {"phantom"}
    ds = pydicom.dcmread(seg.written[0].path, stop_before_pixels=True)
    assert str(ds.PatientName) == INJECTED["PatientName"] and ds.PatientID == INJECTED["PatientID"]
    assert ds.PatientBirthDate == INJECTED["PatientBirthDate"] and ds.StudyInstanceUID == source.StudyInstanceUID
    in_seg = {f.rsplit(": ", 1)[1] for f in _leaks([tmp_path / "seg"], tokens)}
    assert {"PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "SeriesInstanceUID"} <= in_seg
    # the export wrote only the SEG: nothing in the workspace changed, nothing else anywhere carries identity
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["realct.dcm"]
    assert {p: p.stat().st_mtime_ns for p in layout.root.rglob("*") if p.is_file()} == before
    leaks = _leaks([layout.root, tmp_path / "export"], tokens)
    assert leaks == [], leaks


#: every key alqa's .seg.nrrd header may have (technical geometry and segment names only)
NRRD_KEYS = {"type", "dimension", "space", "sizes", "space directions", "kinds", "encoding", "space origin", "endian",
             "Segmentation", "Segment0", "Segment1", "Segment2", "Segment3", "Segment4", "Segment5", "Segment6", "Segment7", "Segment8"}

