"""A CT volume written as a DICOM CT series (pydicom): phantom cases as a hospital's PACS would hold them.

One uncompressed single-frame CT image per slice, on exactly the volume's grid
(RAS+ affine turned into DICOM's LPS: array axis ``i`` runs along a row,
``j`` down a column, ``k`` from slice to slice), HU stored as signed 16-bit
with slope 1 and intercept 0. The series carries a patient and a study
(:class:`SeriesIdentity`), because that is what a DICOM-SEG must reference;
its UIDs are derived from the identity's ``seed``, so the same call writes the
same files. :func:`alqa_core.io.dicom.read_dicom_series` reads it back to the
same volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from alqa_core.errors import AlqaInputError
from alqa_core.io.atomic import atomic_path
from alqa_core.volume import CTVolume

#: RAS+ (nibabel) <-> LPS (DICOM): x and y change sign.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SeriesIdentity:
    """Who and which study a written series belongs to (synthetic values for phantoms)."""

    seed: str
    patient_id: str = "PHANTOM-0001"
    patient_name: str = "Phantom^Alqa"
    patient_birth_date: str = "19700101"
    patient_sex: str = "O"
    study_date: str = "20240101"
    study_id: str = "1"
    accession_number: str = "ALQA0001"

    def uid(self, what: str) -> str:
        return generate_uid(entropy_srcs=["alqa-phantom-dicom", self.seed, what])

    @property
    def study_uid(self) -> str:
        return self.uid("study")

    @property
    def series_uid(self) -> str:
        return self.uid("series")

    @property
    def frame_of_reference_uid(self) -> str:
        return self.uid("frame_of_reference")


def _ds(values) -> list[str]:
    """Decimal strings of at most 16 characters (DICOM DS), as precise as that allows."""
    out = []
    for v in values:
        text = f"{float(v):.10g}"
        out.append(text if len(text) <= 16 else f"{float(v):.8g}")
    return out


def write_dicom_series(ct: CTVolume, folder: str | Path, identity: SeriesIdentity) -> list[Path]:
    """Write ``ct`` as ``folder/slice_<k>.dcm``, one file per slice (each atomically); returns the paths."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise AlqaInputError(folder, "series folder exists and is not empty; alqa never overwrites")
    lps = RAS_TO_LPS @ np.asarray(ct.affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    if abs(float(row_dir @ col_dir)) > 1e-6:
        raise AlqaInputError(folder, "the volume's first two axes are not orthogonal: not a stack of DICOM slices")
    hu = np.rint(np.asarray(ct.array))
    if hu.min() < np.iinfo(np.int16).min or hu.max() > np.iinfo(np.int16).max:
        raise AlqaInputError(folder, f"HU range {hu.min()}..{hu.max()} does not fit signed 16-bit")
    hu = hu.astype(np.int16)
    series_uid = identity.series_uid
    paths = []
    for k in range(hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = identity.uid(f"instance-{k}")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = identity.patient_name
        ds.PatientID = identity.patient_id
        ds.PatientBirthDate = identity.patient_birth_date
        ds.PatientSex = identity.patient_sex
        ds.StudyInstanceUID = identity.study_uid
        ds.StudyDate = identity.study_date
        ds.StudyTime = "120000"
        ds.StudyID = identity.study_id
        ds.AccessionNumber = identity.accession_number
        ds.ReferringPhysicianName = ""
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.Modality = "CT"
        ds.Manufacturer = "alqa phantom"
        ds.FrameOfReferenceUID = identity.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.ImagePositionPatient = _ds(lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3])
        ds.ImageOrientationPatient = _ds([*row_dir, *col_dir])
        ds.PixelSpacing = _ds([spacing[1], spacing[0]])  # (between rows, between columns)
        ds.SliceThickness = _ds([spacing[2]])[0]
        ds.RescaleSlope = "1"
        ds.RescaleIntercept = "0"
        ds.RescaleType = "HU"
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = np.ascontiguousarray(hu[:, :, k].T, dtype="<i2").tobytes()  # [row, column]
        path = folder / f"slice_{k:04d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


__all__ = ["RAS_TO_LPS", "SeriesIdentity", "write_dicom_series"]
