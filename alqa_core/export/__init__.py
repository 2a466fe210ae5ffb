"""The product out: the labelled dataset exported in nnU-Net v2 raw layout with provenance,
and, for cases from a DICOM series, a DICOM-SEG per case that can be pushed to a PACS (STOW-RS).

- :mod:`.nnunet`: nnU-Net v2 raw layout with provenance;
- :mod:`.dicom_seg`: one highdicom DICOM-SEG per DICOM-sourced case, SNOMED-coded segments, provenance as algorithm type;
- :mod:`.stow`: STOW-RS of files to a DICOMweb service, each checked as stored.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "dicom_seg": ["ALGORITHM_TYPE_OF_SOURCE", "SEGMENTATION_TYPES", "CaseSeg", "DicomSegExport", "SegSegment", "export_dicom_seg", "label_frames", "plan_segments", "read_source_series", "write_case_seg"],
        "nnunet": ["ExportResult", "export_nnunet"],
        "stow": ["StowResult", "stow_files"],
    },
)
