"""The product out: the labelled dataset, every case, exported with provenance and a dataset card.

- :mod:`.nnunet`: nnU-Net v2 raw layout, provenance.csv, organ_summary.csv;
- :mod:`.card`: the dataset card (README.md): rounds, human review per organ, annotators;
- :mod:`.dicom_seg`: one DICOM-SEG per case from a DICOM series (highdicom), SNOMED-coded, by provenance;
- :mod:`.stow`: DICOM files pushed to a PACS over DICOMweb (STOW-RS).
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "card": ["HUMAN", "SOURCES", "dataset_card", "organ_summary"],
        "dicom_seg": ["ALGORITHM_TYPE_OF_SOURCE", "CaseSeg", "DicomSegExport", "SEGMENTATION_TYPES", "SegSegment", "export_dicom_seg", "label_frames", "plan_segments", "read_source_series", "write_case_seg"],
        "nnunet": ["ExportResult", "export_cases", "export_nnunet"],
        "stow": ["StowResult", "stow_files"],
    },
)
