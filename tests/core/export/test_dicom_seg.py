"""DICOM-SEG export, verified by reading the SEG back with highdicom and with plain pydicom.

Every check re-projects the SEG's frames onto the reassembled label's own grid
through the frames' source images (their ImagePositionPatient and the pixel
spacing and orientation, computed here, independently of the exporter's path
through highdicom's ``match_geometry``) and asks for Dice 1.0 per segment.
Sources: phantom CT series written with pydicom (three slice orders) and the
real JPEG 2000 series of ../shared/data (a copy with its empty UIDs filled in).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

import alqa_core
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import parse_campaign
from alqa_core.errors import AlqaInputError
from alqa_core.export.dicom_seg import export_dicom_seg, read_source_series, write_case_seg
from alqa_core.ingest.dataset import CaseRecord
from alqa_core.io.dicom import LPS_TO_RAS, read_dicom_series
from alqa_core.io.nifti import read_label, write_ct, write_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.organs import OrganCode, OrganTable, class_map_preset, remap_labels
from alqa_core.phantoms.dicom_series import SeriesIdentity, write_dicom_series
from alqa_core.phantoms.generate import PhantomSpec, generate_case
from alqa_core.volume import Grid, LabelMap
from alqa_core.workspace import WorkspaceLayout

from ...conftest import walk_round


#: every provenance source once: the algorithm type each must give
PROVENANCE = {"spleen": "original", "liver": "revised", "kidney_right": "confirmed", "kidney_left": "confirmed"}
EXPECTED_TYPE = {"original": "MANUAL", "revised": "MANUAL", "confirmed": "SEMIAUTOMATIC", "pseudo": "AUTOMATIC"}


def provenance(table: OrganTable = T) -> dict[str, str]:
    return {name: PROVENANCE.get(name, "pseudo") for name in table.names}


def on_grid(label: LabelMap, grid: Grid) -> LabelMap:
    """The same voxels in the axis order of ``grid`` (what ingest does for a label in another orientation)."""
    transform = ornt_transform(io_orientation(label.affine), io_orientation(grid.affine))
    array = apply_orientation(np.asarray(label.array), transform)
    moved = LabelMap(np.ascontiguousarray(array), label.affine @ inv_ornt_aff(transform, label.shape))
    assert moved.grid.matches(grid)
    return LabelMap(moved.array, grid.affine)


def phantom_series(folder: Path, axcodes: str = "RAS", seed: int = 3) -> tuple[Path, LabelMap]:
    """A phantom CT written as a DICOM series, and its full label on the grid ingest reads back."""
    case = generate_case(PhantomSpec(seed=seed, spacing_mm=(6.0, 6.0, 6.0), axcodes=axcodes))
    write_dicom_series(case.ct, folder, SeriesIdentity(f"test-{seed}-{axcodes}"))
    grid = read_dicom_series(folder).grid
    return folder, on_grid(case.labels, grid)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def voxel_indices(source: pydicom.Dataset, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pixel (row, column) of a source image: its voxel (i, j, k) on ``grid``; must be exact."""
    row_dir = np.array([float(v) for v in source.ImageOrientationPatient[:3]])
    col_dir = np.array([float(v) for v in source.ImageOrientationPatient[3:]])
    d_row, d_col = (float(v) for v in source.PixelSpacing)
    ipp = np.array([float(v) for v in source.ImagePositionPatient])
    rows, cols = np.mgrid[0 : int(source.Rows), 0 : int(source.Columns)]
    lps = ipp[:, None, None] + row_dir[:, None, None] * (cols * d_col) + col_dir[:, None, None] * (rows * d_row)
    ras = LPS_TO_RAS[:3, :3] @ lps.reshape(3, -1)
    ijk = np.linalg.inv(grid.affine) @ np.vstack([ras, np.ones(ras.shape[1])])
    idx = np.rint(ijk[:3]).astype(int)
    np.testing.assert_allclose(ijk[:3], idx, atol=1e-3)
    shape = (int(source.Rows), int(source.Columns))
    return tuple(i.reshape(shape) for i in idx)


def reproject_with_pydicom(path: Path, series: Path, grid: Grid) -> dict[int, np.ndarray]:
    """Plain pydicom: each frame through its referenced source image onto ``grid``; segment number -> mask."""
    ds = pydicom.dcmread(path)
    sources = {str(s.SOPInstanceUID): s for s in (pydicom.dcmread(p, stop_before_pixels=True) for p in series.iterdir())}
    frames = ds.pixel_array if int(ds.NumberOfFrames) > 1 else ds.pixel_array[None]
    labelmap = ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    numbers = [int(s.SegmentNumber) for s in ds.SegmentSequence if int(s.SegmentNumber) > 0]
    out = {n: np.zeros(grid.shape, bool) for n in numbers}
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        src = sources[uid]
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(ipp, [float(v) for v in src.ImagePositionPatient], atol=1e-4)  # frame on its source
        i, j, k = voxel_indices(src, grid)
        if labelmap:
            for n, mask in out.items():
                mask[i, j, k] |= frames[f] == n
        else:
            out[int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)][i, j, k] |= frames[f].astype(bool)
    return out


def reproject_with_highdicom(path: Path, series: Path, grid: Grid) -> dict[int, np.ndarray]:
    """highdicom: pixels by source instance (in the sorted order), placed through each source onto ``grid``."""
    seg = hd.seg.segread(path)
    sources = hd.spatial.sort_datasets([pydicom.dcmread(p, stop_before_pixels=True) for p in series.iterdir()])
    pixels = seg.get_pixels_by_source_instance(
        [str(s.SOPInstanceUID) for s in sources], combine_segments=True, assert_missing_frames_are_empty=True
    )
    out = {n: np.zeros(grid.shape, bool) for n in seg.segment_numbers}
    for f, src in enumerate(sources):
        i, j, k = voxel_indices(src, grid)
        for n, mask in out.items():
            mask[i, j, k] |= pixels[f] == n
    return out


def assert_segments_equal_label(path: Path, series: Path, label: LabelMap, table: OrganTable = T) -> list:
    """Both readers: segment numbers 1..N for the organs present, each with Dice 1.0 against the label."""
    seg = hd.seg.segread(path)
    present = [o for o in table.organs if np.any(np.asarray(label.array) == o.value)]
    assert seg.segment_numbers == list(range(1, len(present) + 1))
    labels = [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
    assert labels == [o.name for o in present]
    for reader in (reproject_with_pydicom, reproject_with_highdicom):
        masks = reader(path, series, label.grid)
        assert sorted(masks) == seg.segment_numbers
        for n, organ in zip(seg.segment_numbers, present):
            truth = np.asarray(label.array) == organ.value
            assert dice(masks[n], truth) == 1.0, (reader.__name__, organ.name)
            assert np.array_equal(masks[n], truth)
    return present


# --------------------------------------------------------------------------
# Phantom series
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "axcodes, seg_type, compress",
    [("RAS", "BINARY", False), ("LAS", "BINARY", False), ("LPS", "BINARY", True), ("RAS", "LABELMAP", False), ("LAS", "LABELMAP", True)],
)
def test_phantom_seg_reads_back_equal_to_the_label(tmp_path, axcodes, seg_type, compress):
    series, label = phantom_series(tmp_path / "series", axcodes)
    result = write_case_seg("ph", series, label, provenance(), T, tmp_path / "ph.dcm", 2, seg_type, compress)
    assert result.segmentation_type == seg_type and result.n_source_images == label.shape[2]
    present = assert_segments_equal_label(result.path, series, label)
    assert [s.organ for s in result.segments] == [o.name for o in present]
    ds = pydicom.dcmread(result.path, stop_before_pixels=True)
    expected_class = "1.2.840.10008.5.1.4.1.1.66.7" if seg_type == "LABELMAP" else "1.2.840.10008.5.1.4.1.1.66.4"
    assert ds.SOPClassUID == expected_class and ds.SegmentationType == seg_type
    assert (ds.file_meta.TransferSyntaxUID != pydicom.uid.ExplicitVRLittleEndian) == compress


def test_segment_table_codes_provenance_references_and_identity(tmp_path):
    series, label = phantom_series(tmp_path / "series")
    result = write_case_seg("ph", series, label, provenance(), T, tmp_path / "ph.dcm", 3)
    seg = hd.seg.segread(result.path)
    rows = []
    for n in seg.segment_numbers:
        d = seg.get_segment_description(n)
        code = T.code_of(d.segment_label)
        assert d.segmented_property_category.value == "123037004" and d.segmented_property_category.scheme_designator == "SCT"
        assert (d.segmented_property_type.value, d.segmented_property_type.scheme_designator) == (code.code, "SCT")
        modifier = d.SegmentedPropertyTypeCodeSequence[0].get("SegmentedPropertyTypeModifierCodeSequence")
        side = {"kidney_right": "24028007", "kidney_left": "7771000"}.get(d.segment_label)
        assert (modifier[0].CodeValue if modifier else None) == side, d.segment_label
        source = provenance()[d.segment_label]
        assert d.algorithm_type.value == EXPECTED_TYPE[source], d.segment_label
        algo = d.algorithm_identification
        if source == "original":
            assert algo is None
        else:
            assert algo.name == "alqa" and algo.version == alqa_core.__version__
            params = {p.split("=")[0]: p.split("=")[1] for p in str(algo[0].AlgorithmParameters).split(",")}
            assert params == {"model_round": "3", "organ_provenance": source}
        rows.append((n, d.segment_label, d.segmented_property_type.value, d.algorithm_type.value))
    assert {r[1] for r in rows} >= {"spleen", "liver", "kidney_right", "kidney_left"}
    assert [r[:4] for r in rows] == [(s.number, s.organ, s.code, s.algorithm_type) for s in result.segments]
    # the source series, study and patient: references a PACS files the SEG under
    sources = read_source_series(series)
    ds = pydicom.dcmread(result.path, stop_before_pixels=True)
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID and ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert ds.PatientID == "PHANTOM-0001" and str(ds.PatientName) == "Phantom^Alqa" and ds.AccessionNumber == "ALQA0001"
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == {s.SOPInstanceUID for s in sources}
    assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
    # the same content gives the same UIDs: pushing an export twice stores one instance
    again = write_case_seg("ph", series, label, provenance(), T, tmp_path / "again.dcm", 3)
    assert (again.sop_instance_uid, again.series_instance_uid) == (result.sop_instance_uid, result.series_instance_uid)
    other = write_case_seg("ph", series, label, provenance(), T, tmp_path / "other.dcm", 4)
    assert other.sop_instance_uid != result.sop_instance_uid


def test_an_empty_organ_gives_no_segment_and_numbers_stay_consecutive(tmp_path):
    series, label = phantom_series(tmp_path / "series")
    array = np.array(label.array)
    for organ in ("spleen", "gallbladder"):  # 1 and 4: the first and a middle one
        array[array == T.value_of(organ)] = 0
    holed = LabelMap(array, label.affine)
    result = write_case_seg("ph", series, holed, provenance(), T, tmp_path / "ph.dcm", 0)
    assert [s.number for s in result.segments] == list(range(1, len(result.segments) + 1))
    assert {"spleen", "gallbladder"}.isdisjoint(s.organ for s in result.segments)
    assert result.segments[0].organ == "kidney_right"
    assert_segments_equal_label(result.path, series, holed)


def test_refusals_name_the_file_and_the_reason(tmp_path):
    series, label = phantom_series(tmp_path / "series")
    # a label on another grid (a cropped one would be silently padded by match_geometry: refused instead)
    cropped = LabelMap(np.asarray(label.array)[:, :, 1:], label.affine)
    with pytest.raises(AlqaInputError, match="not on the grid of its source series"):
        write_case_seg("ph", series, cropped, provenance(), T, tmp_path / "a.dcm", 0, label_path="lab.nii.gz")
    # an organ present in the label without a code
    table = OrganTable.from_pairs([(v, n) for v, n in zip(T.values, T.names)])
    uncoded = OrganTable(tuple(o if o.name != "liver" else type(o)(o.value, "liver_graft") for o in table.organs))
    with pytest.raises(AlqaInputError, match="'liver_graft' has no SNOMED CT code"):
        write_case_seg("ph", series, label, {n: "pseudo" for n in uncoded.names}, uncoded, tmp_path / "b.dcm", 0)
    # an organ without provenance; an empty label; an unknown segmentation type
    with pytest.raises(AlqaInputError, match="has no provenance"):
        write_case_seg("ph", series, label, {}, T, tmp_path / "c.dcm", 0)
    empty = LabelMap(np.zeros(label.shape, np.uint8), label.affine)
    with pytest.raises(AlqaInputError, match="label is empty"):
        write_case_seg("ph", series, empty, provenance(), T, tmp_path / "d.dcm", 0)
    with pytest.raises(AlqaInputError, match="segmentation type"):
        write_case_seg("ph", series, label, provenance(), T, tmp_path / "e.dcm", 0, "FRACTIONAL")
    # a slice of another series in the folder
    other = tmp_path / "other"
    phantom_series(other, seed=4)
    shutil.copyfile(min(other.iterdir()), series / "zz_other.dcm")
    with pytest.raises(AlqaInputError, match="different StudyInstanceUID"):
        write_case_seg("ph", series, label, provenance(), T, tmp_path / "f.dcm", 0)
    assert not list(tmp_path.glob("*.dcm"))  # nothing half-written, nothing at all


def test_phantom_series_reads_back_to_the_same_volume(tmp_path):
    case = generate_case(PhantomSpec(seed=5, spacing_mm=(6.0, 6.0, 6.0)))
    paths = write_dicom_series(case.ct, tmp_path / "s", SeriesIdentity("t5"))
    assert len(paths) == case.ct.shape[2]
    back = read_dicom_series(tmp_path / "s")
    assert back.grid.matches(case.ct.grid)
    np.testing.assert_array_equal(back.array, np.rint(case.ct.array))
    with pytest.raises(AlqaInputError, match="never overwrites"):
        write_dicom_series(case.ct, tmp_path / "s", SeriesIdentity("t5"))


# --------------------------------------------------------------------------
# The real series
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_series(real_ct_dir, tmp_path_factory, fill_series_uids) -> tuple[Path, LabelMap]:
    """A copy of the real series with UIDs written in, and its TotalSegmentator label in organ-table values on its grid."""
    folder = tmp_path_factory.mktemp("real") / "series"
    shutil.copytree(real_ct_dir / "series", folder)
    fill_series_uids(folder)
    grid = read_dicom_series(folder).grid
    ts = read_label(real_ct_dir / "totalsegmentator_v2_labels.nii.gz")
    remapped = remap_labels(np.asarray(ts.array), class_map_preset("total"), T).array
    return folder, on_grid(LabelMap(remapped, ts.affine), grid)


def test_real_series_seg_reads_back_equal_to_the_label(real_series, tmp_path):
    series, label = real_series
    result = write_case_seg("realct", series, label, provenance(), T, tmp_path / "realct.dcm", 1)
    present = assert_segments_equal_label(result.path, series, label)
    assert [o.name for o in present] == ["spleen", "liver", "stomach", "aorta", "inferior_vena_cava", "pancreas"]
    ds = pydicom.dcmread(result.path, stop_before_pixels=True)
    positions = {tuple(float(v) for v in s.ImagePositionPatient) for s in read_source_series(series)}
    frames = {tuple(float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient) for f in ds.PerFrameFunctionalGroupsSequence}
    assert frames <= positions and len(frames) == 20  # every slice holds some organ here


def test_real_series_without_uids_is_refused_naming_the_file(real_ct_dir, real_series, tmp_path):
    _, label = real_series
    raw = tmp_path / "raw"
    shutil.copytree(real_ct_dir / "series", raw)
    with pytest.raises(AlqaInputError) as err:
        write_case_seg("realct", raw, label, provenance(), T, tmp_path / "x.dcm", 0)
    assert err.value.path == str(min(raw.iterdir()))
    assert "StudyInstanceUID" in err.value.reason and "SeriesInstanceUID" in err.value.reason and "PACS" in err.value.reason
    assert not (tmp_path / "x.dcm").exists()


# --------------------------------------------------------------------------
# The campaign export and the organ table's codes
# --------------------------------------------------------------------------


def test_export_writes_dicom_cases_with_a_label_and_reports_the_others(tmp_path):
    layout = WorkspaceLayout(tmp_path / "ws")
    catalog = Catalog(layout.catalog)
    cases = []
    for name in ("dcm_done", "dcm_waiting"):
        series, label = phantom_series(tmp_path / "data" / name, seed=len(cases) + 1)
        cases.append(CaseRecord(name, "Dataset900_Dicom", "train", series, "dicom", None, ()))
        if name == "dcm_done":
            write_label(layout.reassembled_label(name), label)
            rows = [{"case_id": name, "organ": o, "source": s, "pseudo_round": 1} for o, s in provenance().items()]
            catalog.write("provenance", name, pd.DataFrame(rows))
    nifti = generate_case(PhantomSpec(seed=9, spacing_mm=(6.0, 6.0, 6.0)))
    write_ct(tmp_path / "data" / "nii_0000.nii.gz", nifti.ct)
    write_label(layout.reassembled_label("nii"), nifti.labels)
    cases.append(CaseRecord("nii", "Dataset900_Dicom", "train", tmp_path / "data" / "nii_0000.nii.gz", "nifti", None, ()))
    walk_round(catalog, 2, "queued", "round 2 is under way; the label was reassembled with round 1's pseudo label")

    result = export_dicom_seg(layout, tmp_path / "out", cases, T)
    assert [c.case_id for c in result.written] == ["dcm_done"]
    assert dict(result.skipped).keys() == {"dcm_waiting", "nii"}
    assert "no reassembled label" in dict(result.skipped)["dcm_waiting"] and "NIfTI" in dict(result.skipped)["nii"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dcm_done.dcm"]
    algo = hd.seg.segread(result.written[0].path).get_segment_description(2).algorithm_identification
    assert "model_round=1" in str(algo[0].AlgorithmParameters)  # the round behind the pseudo label, not the current one
    assert_segments_equal_label(result.written[0].path, cases[0].image_path, read_label(layout.reassembled_label("dcm_done")))
    with pytest.raises(AlqaInputError, match="never overwrites"):
        export_dicom_seg(layout, tmp_path / "out", cases, T)
    with pytest.raises(AlqaInputError, match="no DICOM-SEG to write"):
        export_dicom_seg(layout, tmp_path / "out2", cases[1:], T)


def test_the_organ_table_carries_snomed_codes_and_a_custom_table_its_own(tmp_path):
    facts = {"liver": "10200004", "spleen": "78961009", "pancreas": "15776009", "kidney_right": "64033007",
             "kidney_left": "64033007", "gallbladder": "28231008", "stomach": "69695003", "aorta": "15825003",
             "inferior_vena_cava": "64131007"}
    assert {o.name: o.code.code for o in T.organs} == facts
    assert (T.code_of("kidney_right").laterality, T.code_of("kidney_left").laterality) == ("right", "left")
    base = {"name": "t", "datasets": [{"path": str(tmp_path)}], "architectures": [{"name": "unet"}]}
    # the existing `name: value` form is unchanged, and known organs keep their codes
    plain = parse_campaign({**base, "organ_table": {"liver": 1, "spleen": 2}}).organ_table
    assert plain.values == (1, 2) and plain.code_of("liver").code == "10200004"
    custom = parse_campaign({**base, "organ_table": {
        "liver": 1,
        "portal_vein": {"value": 2, "code": "32764006", "meaning": "Portal vein"},
        "adrenal_gland_left": {"value": 3, "code": "23451007", "meaning": "Adrenal gland", "laterality": "left"},
    }}).organ_table
    assert custom.code_of("portal_vein") == OrganCode("32764006", "Portal vein")
    assert custom.code_of("adrenal_gland_left").laterality == "left"
    assert custom == OrganTable.from_pairs([(1, "liver"), (2, "portal_vein"), (3, "adrenal_gland_left")])  # codes are not identity
    assert OrganTable.from_pairs([(2, "portal_vein")]).code_of("portal_vein") is None
    for bad, match in (
        ({"value": 2, "code": "32764006"}, "give both 'code' and 'meaning'"),
        ({"value": 2, "code": "PV", "meaning": "Portal vein"}, "digits"),
        ({"value": 2, "code": "32764006", "meaning": "Portal vein", "laterality": "up"}, "laterality"),
        ({"code": "32764006", "meaning": "Portal vein"}, "'value' required"),
        ({"value": 2, "colour": "red"}, "expected keys"),
    ):
        with pytest.raises(AlqaInputError, match=match):
            parse_campaign({**base, "organ_table": {"liver": 1, "portal_vein": bad}})
