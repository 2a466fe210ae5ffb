"""Stage 1, ingest: datasets in nnU-Net v2 raw layout (or DICOM series) into the workspace, then preprocessing.

- :mod:`.dataset`: a dataset folder read into typed records (read-only);
- :mod:`.case_files`: a case's CT and label, the label brought onto the CT's grid;
- :mod:`.kidney`: a generic ``kidney`` label split into right and left;
- :mod:`.cases`: the campaign's cases ingested as PHI-free NIfTI scans and organ-table labels;
- :mod:`.preprocess`: invertible preprocessing (RAS, HU window, spacing, body crop, padding);
- :mod:`.dicomweb`: a study's CT series pulled from a PACS (QIDO-RS, WADO-RS) into a dataset.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "case_files": ["case_image_grid", "load_case_image", "load_case_label", "load_case_label_report"],
        "cases": ["CASE_COLUMNS", "CampaignIndex", "LabelSummary", "PreprocessSummary", "ScanSummary", "case_row", "index_campaign", "ingest_case_label", "ingest_case_scan", "ingest_label", "ingest_scan", "member_class_maps", "preprocess_case", "preprocess_scan", "scan_preview", "write_scan_preview"],
        "dataset": ["CASE_ID_PATTERN", "CaseLabel", "CaseRecord", "DatasetRecord", "ExternalPredictionRecord", "member_json_class_map", "prediction_folders", "read_dataset", "read_datasets", "read_prediction_folder", "survey_datasets", "unlisted_by_name", "unlisted_prediction_folders"],
        "dicomweb": ["PullResult", "PulledCase", "default_case_id", "pull_dicomweb"],
        "kidney": ["GENERIC_KIDNEY_NAMES", "remap_labels_splitting_kidney", "split_kidney", "split_kidney_values"],
        "preprocess": ["AIR_HU", "GridRecord", "PreprocessedCT", "preprocess_ct", "preprocess_label", "ras_grid", "resample_to_grid", "resampled_grid", "to_original_grid", "window_hu"],
    },
)
