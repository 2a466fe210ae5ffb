"""Human QA: montages to grade, grades in the catalog, and the QA regressor.

- :mod:`.montage`: every axial slice with the organs overlaid, 1344 px for people, 256 px for the
  regressor (001_e60473b22d13ca03.txt) (torch, for the differentiable montage);
- :mod:`.grades`: immutable 0/1/2 grades, latest wins;
- :mod:`.regressor`: MONAI ResNet-18 regressing the grade (torch);
- :mod:`.pipeline`: QA on the workspace (montages per case, the regressor's training set, scores).

The outlier queue that puts failures first is a queue strategy: :mod:`alqa_core.annotation.queue.outliers`.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "grades": ["COLUMNS", "CSV_COLUMNS", "FAILURE", "GRADE_NAMES", "QAGrade", "SUCCESS", "TABLE", "USABLE", "import_grades_csv", "latest_grade_rows", "latest_grades", "parse_grade", "parse_graded_at", "record_grade", "record_grades"],
        "montage": ["MontageLayout", "OVERLAY_ALPHA", "downsample", "montage_layout", "montage_png", "montage_tensor", "qa_montage", "read_montage_png"],
        "pipeline": ["CaseMontages", "score_cases", "train_regressor_from_grades", "write_case_montages"],
        "regressor": ["EpochMSE", "LoadedQARegressor", "QARegressorResult", "QA_CHECKPOINT_FORMAT", "build_qa_regressor", "freeze_regressor", "load_qa_regressor", "qa_loss", "save_qa_regressor", "score_montages", "split_by_case", "train_qa_regressor"],
    },
)
