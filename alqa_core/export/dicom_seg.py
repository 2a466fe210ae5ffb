"""DICOM-SEG out (highdicom): a reassembled label as a segmentation of its source DICOM series.

One SEG per case whose source is a DICOM series. It references the source
series (ReferencedSeriesSequence, FrameOfReferenceUID, each frame's source
image) and carries one segment per organ present, numbered 1..N in organ-table
order, each coded from the organ table (SNOMED CT category and type, with
laterality as the type's modifier). A segment's algorithm type follows the
organ's provenance (:data:`ALGORITHM_TYPE_OF_SOURCE`); the algorithm
identification names alqa's version and the model round.

Identity, by design: a SEG carries the source's patient and study identifiers
(highdicom copies them from the source images) so that a PACS files it with the
study. It is the only thing alqa writes that does, and only on explicit export.
A source without the UIDs a PACS needs is refused, naming the file.

highdicom writes the file (the field's library for DICOM-SEG); the only
hand-written part is the check that the label lies on the series' own grid.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping

import highdicom as hd
import numpy as np
import pydicom
from highdicom.sr import CodedConcept
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, generate_uid

import alqa_core
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.dataset import CaseRecord
from alqa_core.io.atomic import atomic_path
from alqa_core.io.dicom import read_dicom_grid
from alqa_core.io.nifti import read_label
from alqa_core.organs import LATERALITY_CODES, OrganCode, OrganTable
from alqa_core.rounds import current_round
from alqa_core.volume import LabelMap, grid_mismatch_mm
from alqa_core.workspace import WorkspaceLayout

#: provenance source (catalog table ``provenance``, column ``source``) -> segment algorithm type
ALGORITHM_TYPE_OF_SOURCE: Mapping[str, str] = MappingProxyType(
    {"original": "MANUAL", "revised": "MANUAL", "confirmed": "SEMIAUTOMATIC", "pseudo": "AUTOMATIC"}
)
#: sources whose voxels owe nothing to alqa's models: no algorithm identification
NO_ALGORITHM_SOURCES = frozenset({"original"})
SEGMENTATION_TYPES = ("BINARY", "LABELMAP")
#: lossless compression per segmentation type when asked for (highdicom allows J2K for BINARY; JPEG-LS was smallest for LABELMAP)
COMPRESSED_SYNTAX: Mapping[str, UID] = MappingProxyType({"BINARY": JPEG2000Lossless, "LABELMAP": JPEGLSLossless})
#: every source image must carry these for a PACS to file the SEG with its study and series
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
SEG_SERIES_NUMBER = 900
#: how far (index units / direction cosines) the label's and the series' geometry may differ
GEOMETRY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SegSegment:
    """One segment of a written SEG (the segment table of the report)."""

    number: int
    organ: str
    label_value: int
    code: str
    meaning: str
    laterality: str | None
    source: str
    algorithm_type: str
    voxels: int


@dataclass(frozen=True)
class CaseSeg:
    case_id: str
    path: Path
    segmentation_type: str
    segments: tuple[SegSegment, ...]
    n_frames: int
    n_source_images: int
    size_bytes: int
    seconds: float
    sop_instance_uid: str
    series_instance_uid: str


@dataclass(frozen=True)
class DicomSegExport:
    root: Path
    written: tuple[CaseSeg, ...]
    #: (case_id, reason) for every case that got no SEG
    skipped: tuple[tuple[str, str], ...]


# --------------------------------------------------------------------------
# The source series
# --------------------------------------------------------------------------


def read_source_series(folder: str | Path) -> list[pydicom.Dataset]:
    """The series' headers (no pixels), checked for the UIDs a PACS needs, in highdicom's sort order.

    Sorted with :func:`highdicom.spatial.sort_datasets` (highdicom does not
    sort ``source_images`` itself, nor check them against the pixel array).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AlqaInputError(folder, "expected the folder of the case's source DICOM series")
    datasets = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError) as exc:
            raise AlqaInputError(path, f"not a readable DICOM file ({exc})") from exc
        missing = [kw for kw in REQUIRED_UIDS if not str(ds.get(kw, "") or "").strip()]
        if missing:
            raise AlqaInputError(
                path,
                f"empty or missing {', '.join(missing)}: a DICOM-SEG must reference its source study, series and images, "
                "and a PACS files nothing without them (write the UIDs into the series, or export it again from the PACS)",
            )
        datasets.append(ds)
    if len(datasets) < 2:
        raise AlqaInputError(folder, f"{len(datasets)} DICOM file(s): a source series needs at least 2 slices")
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(kw)) for ds in datasets}
        if len(values) > 1:
            raise AlqaInputError(folder, f"{len(values)} different {kw} values: one folder must hold one series")
    if len({str(ds.SOPInstanceUID) for ds in datasets}) != len(datasets):
        raise AlqaInputError(folder, "two files share one SOPInstanceUID")
    return hd.spatial.sort_datasets(datasets)


def series_geometry(sources: list[pydicom.Dataset], folder: Path) -> hd.VolumeGeometry:
    """The sorted series as a highdicom volume geometry (array index 0 is ``sources[0]``)."""
    spacing, _ = hd.spatial.get_series_volume_positions(sources, sort=False)
    if spacing is None:
        raise AlqaInputError(folder, "the slices do not form one regular volume (missing, duplicate or uneven positions)")
    first = sources[0]
    return hd.VolumeGeometry.from_attributes(
        image_position=first.ImagePositionPatient,
        image_orientation=first.ImageOrientationPatient,
        rows=int(first.Rows),
        columns=int(first.Columns),
        pixel_spacing=first.PixelSpacing,
        spacing_between_slices=float(spacing),
        number_of_frames=len(sources),
        coordinate_system="PATIENT",
        frame_of_reference_uid=str(first.FrameOfReferenceUID),
    )


def label_frames(label: LabelMap, sources: list[pydicom.Dataset], folder: Path, label_path: Path | str = "label") -> np.ndarray:
    """The label as ``(frames, rows, columns)``, frame ``f`` on ``sources[f]``; no resampling, ever.

    The label must lie on the series' own grid (the grid ingest read, within
    1 µm); highdicom's ``match_geometry`` then only permutes and flips axes.
    """
    grid = read_dicom_grid(folder)
    if not label.grid.matches(grid):
        detail = (
            f"shape {tuple(label.shape)} vs the series' {tuple(grid.shape)}"
            if tuple(label.shape) != tuple(grid.shape)
            else f"voxel centres differ by up to {grid_mismatch_mm(label.grid, grid):.3f} mm"
        )
        raise AlqaInputError(label_path, f"not on the grid of its source series {folder} ({detail}): was the series changed after ingest?")
    volume = hd.Volume(
        np.asarray(label.array),
        np.asarray(label.affine, dtype=np.float64),
        coordinate_system="PATIENT",
        frame_of_reference_uid=str(sources[0].FrameOfReferenceUID),
        from_reference_convention="RAS",
    )
    try:
        matched = volume.match_geometry(series_geometry(sources, folder), tol=GEOMETRY_TOLERANCE)
    except RuntimeError as exc:
        raise AlqaInputError(label_path, f"cannot place the label on the frames of {folder} without resampling ({exc})") from exc
    return np.ascontiguousarray(matched.array)


# --------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------


def coded(code: OrganCode) -> tuple[CodedConcept, CodedConcept, CodedConcept | None]:
    """(category, type, laterality modifier or None) as highdicom coded concepts."""
    category = CodedConcept(code.category_code, "SCT", code.category_meaning)
    prop_type = CodedConcept(code.code, code.scheme, code.meaning)
    modifier = None
    if code.laterality is not None:
        value, meaning = LATERALITY_CODES[code.laterality]
        modifier = CodedConcept(value, "SCT", meaning)
    return category, prop_type, modifier


def algorithm_identification(round_index: int, source: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name="alqa",
        family=codes.cid7162.ArtificialIntelligence,
        version=alqa_core.__version__,
        source="alqa active-learning campaign",
        parameters={"model_round": str(round_index), "organ_provenance": source},
    )


def plan_segments(
    frames: np.ndarray, table: OrganTable, provenance: Mapping[str, str], case_where: str
) -> tuple[SegSegment, ...]:
    """One segment per organ present (non-empty), numbered 1..N in organ-table order."""
    counts = np.bincount(frames.ravel(), minlength=table.max_value + 1)
    stray = sorted(set(np.flatnonzero(counts).tolist()) - {0, *table.values})
    if stray:
        raise AlqaInputError(case_where, f"label values {stray} are not in the organ table {table.values}")
    out = []
    for organ in table.organs:
        voxels = int(counts[organ.value])
        if voxels == 0:
            continue
        if organ.code is None:
            raise AlqaInputError(
                case_where, f"organ {organ.name!r} has no SNOMED CT code; give one in the campaign's organ_table "
                f"({organ.name}: {{value: {organ.value}, code: ..., meaning: ...}})"
            )
        source = provenance.get(organ.name)
        if source not in ALGORITHM_TYPE_OF_SOURCE:
            raise AlqaInputError(case_where, f"organ {organ.name!r} has no provenance (got {source!r}); reassemble the case again")
        out.append(
            SegSegment(len(out) + 1, organ.name, organ.value, organ.code.code, organ.code.meaning, organ.code.laterality,
                       source, ALGORITHM_TYPE_OF_SOURCE[source], voxels)
        )
    return tuple(out)


def segment_description(segment: SegSegment, code: OrganCode, round_index: int) -> hd.seg.SegmentDescription:
    category, prop_type, modifier = coded(code)
    desc = hd.seg.SegmentDescription(
        segment_number=segment.number,
        segment_label=segment.organ,
        segmented_property_category=category,
        segmented_property_type=prop_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues(segment.algorithm_type),
        algorithm_identification=None if segment.source in NO_ALGORITHM_SOURCES else algorithm_identification(round_index, segment.source),
    )
    if modifier is not None:
        # SegmentDescription takes no laterality: the modifier sits inside the type item (0062,0011),
        # as TotalSegmentator's mapping and dcmqi/Slicer write it
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    return desc


# --------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------


def write_case_seg(
    case_id: str,
    series_folder: str | Path,
    label: LabelMap,
    provenance: Mapping[str, str],
    table: OrganTable,
    out_path: str | Path,
    round_index: int,
    segmentation_type: str = "BINARY",
    compress: bool = False,
    label_path: Path | str = "label",
) -> CaseSeg:
    """Write one case's SEG atomically at ``out_path``; ``provenance`` is organ -> source."""
    t0 = time.perf_counter()
    seg_type = segmentation_type.upper()
    if seg_type not in SEGMENTATION_TYPES:
        raise AlqaInputError(None, f"segmentation type must be one of {SEGMENTATION_TYPES}, got {segmentation_type!r}")
    folder, out_path = Path(series_folder), Path(out_path)
    where = f"case {case_id!r}"
    sources = read_source_series(folder)
    frames = label_frames(label, sources, folder, label_path)
    segments = plan_segments(frames, table, provenance, where)
    if not segments:
        raise AlqaInputError(where, "the label is empty: no organ, so no segment to write")
    lut = np.zeros(table.max_value + 1, dtype=np.uint8)
    for s in segments:
        lut[s.label_value] = s.number
    pixels = lut[frames]
    by_name = {o.name: o for o in table.organs}
    descriptions = [segment_description(s, by_name[s.organ].code, round_index) for s in segments]
    # the same content gives the same UIDs, so pushing an export twice stores one instance
    entropy = ["alqa", alqa_core.__version__, str(sources[0].SeriesInstanceUID), case_id, seg_type, str(round_index),
               ",".join(f"{s.organ}={s.source}" for s in segments), hd.__version__, str(compress),
               hashlib.sha256(pixels.tobytes()).hexdigest()]
    kwargs = {"transfer_syntax_uid": COMPRESSED_SYNTAX[seg_type] if compress else ExplicitVRLittleEndian}
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=seg_type,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(entropy_srcs=[*entropy, "series"]),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(entropy_srcs=[*entropy, "instance"]),
        instance_number=1,
        manufacturer="alqa",
        manufacturer_model_name="alqa DICOM-SEG export",
        software_versions=alqa_core.__version__,
        device_serial_number="alqa",
        content_label="ALQA_ORGANS",
        content_description=f"alqa organs, model round {round_index}",
        series_description=f"alqa organs round {round_index} ({seg_type.lower()})",
        **kwargs,
    )
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return CaseSeg(
        case_id, out_path, seg_type, segments, int(seg.NumberOfFrames), len(sources), out_path.stat().st_size,
        time.perf_counter() - t0, str(seg.SOPInstanceUID), str(seg.SeriesInstanceUID),
    )


# --------------------------------------------------------------------------
# The campaign
# --------------------------------------------------------------------------


def _provenance(catalog: Catalog) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
    """case -> organ -> source, and case -> the model round behind its pseudo label (provenance ``pseudo_round``)."""
    prov = catalog.read("provenance")
    out: dict[str, dict[str, str]] = {}
    rounds: dict[str, int] = {}
    for row in prov.itertuples():
        out.setdefault(str(row.case_id), {})[str(row.organ)] = str(row.source)
        pseudo_round = getattr(row, "pseudo_round", None)
        if pseudo_round is not None and pseudo_round == pseudo_round and int(pseudo_round) >= 0:
            rounds[str(row.case_id)] = int(pseudo_round)
    return out, rounds


def export_dicom_seg(
    layout: WorkspaceLayout,
    out: str | Path,
    cases: Iterable[CaseRecord],
    table: OrganTable,
    segmentation_type: str = "BINARY",
    compress: bool = False,
) -> DicomSegExport:
    """``<out>/<case>.dcm`` for every DICOM-sourced case with a reassembled label; the others are reported.

    ``out`` must be new or empty (alqa never overwrites). The model round is
    the round whose pseudo label the case's reassembled label used (provenance
    ``pseudo_round``), else the campaign's current round.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlqaInputError(out, "export folder exists and is not empty; alqa never overwrites")
    catalog = Catalog(layout.catalog)
    current = max(current_round(catalog), 0)
    provenance, pseudo_rounds = _provenance(catalog)
    written, skipped = [], []
    for case in sorted(cases, key=lambda c: c.case_id):
        label_path = layout.reassembled_label(case.case_id)
        if case.image_format != "dicom":
            skipped.append((case.case_id, "source is a NIfTI file, not a DICOM series (its label is in the nnU-Net export)"))
        elif not label_path.is_file():
            skipped.append((case.case_id, "no reassembled label yet (materialize reassembled_labels for it)"))
        else:
            written.append(
                write_case_seg(case.case_id, case.image_path, read_label(label_path), provenance.get(case.case_id, {}), table,
                               out / f"{case.case_id}.dcm", pseudo_rounds.get(case.case_id, current), segmentation_type, compress, label_path)
            )
    if not written:
        reasons = "; ".join(f"{c}: {r}" for c, r in skipped[:5]) or "the campaign has no cases"
        raise AlqaInputError(out, f"no DICOM-SEG to write ({reasons})")
    return DicomSegExport(out, tuple(written), tuple(skipped))


__all__ = [
    "ALGORITHM_TYPE_OF_SOURCE",
    "SEGMENTATION_TYPES",
    "CaseSeg",
    "DicomSegExport",
    "SegSegment",
    "export_dicom_seg",
    "label_frames",
    "plan_segments",
    "read_source_series",
    "write_case_seg",
]
