"""Human QA: montages to grade, grades in the catalog, the outlier queue and the QA regressor.

- :mod:`~alqa_core.qa.montage`: every axial slice with the organs overlaid,
  1344 px for people, 256 px for the regressor (001_e60473b22d13ca03.txt);
- :mod:`~alqa_core.qa.grades`: immutable 0/1/2 grades, latest wins;
- :mod:`~alqa_core.qa.outliers`: failures first, then attention priority
  (000_3a3cb93e44d13ddd.txt);
- :mod:`~alqa_core.qa.regressor`: MONAI ResNet-18 regressing the grade.
"""

from alqa_core.qa.grades import (
    GRADE_NAMES,
    QAGrade,
    import_grades_csv,
    latest_grade_rows,
    latest_grades,
    record_grade,
    record_grades,
)
from alqa_core.qa.montage import (
    MONTAGE_PX,
    REGRESSOR_PX,
    MontageLayout,
    downsample,
    montage_layout,
    montage_png,
    montage_tensor,
    qa_montage,
    read_montage_png,
)
from alqa_core.qa.outliers import latest_case_grades, outlier_queue, predicted_failures
from alqa_core.qa.regressor import (
    EpochMSE,
    LoadedQARegressor,
    QARegressorConfig,
    QARegressorResult,
    build_qa_regressor,
    freeze_regressor,
    load_qa_regressor,
    qa_loss,
    save_qa_regressor,
    score_montages,
    split_by_case,
    train_qa_regressor,
)

__all__ = [
    "GRADE_NAMES",
    "MONTAGE_PX",
    "REGRESSOR_PX",
    "EpochMSE",
    "LoadedQARegressor",
    "MontageLayout",
    "QAGrade",
    "QARegressorConfig",
    "QARegressorResult",
    "build_qa_regressor",
    "downsample",
    "freeze_regressor",
    "import_grades_csv",
    "latest_case_grades",
    "latest_grade_rows",
    "latest_grades",
    "load_qa_regressor",
    "montage_layout",
    "montage_png",
    "montage_tensor",
    "outlier_queue",
    "predicted_failures",
    "qa_loss",
    "qa_montage",
    "read_montage_png",
    "record_grade",
    "record_grades",
    "save_qa_regressor",
    "score_montages",
    "split_by_case",
    "train_qa_regressor",
]
