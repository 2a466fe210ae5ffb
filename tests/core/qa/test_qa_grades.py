"""QA grades in the catalog (immutable, latest wins), CSV import, and the outlier queue."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from alqa_core.annotation.queue.outliers import outlier_queue, predicted_failures
from alqa_core.annotation.queue.priority import rank_attention_rows
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError
from alqa_core.qa.grades import QAGrade, import_grades_csv, latest_grades, record_grade

T1 = "2024-05-01T10:00:00+00:00"
T2 = "2024-05-01T12:00:00+02:00"  # = 10:00 UTC, the same instant as T1
T3 = "2024-05-02T09:00:00Z"


def _files(catalog):
    return sorted((catalog.root / "qa_grades").glob("*.parquet"))


# ---------------------------------------------------------------- grades


def test_two_grades_two_files_latest_counts(tmp_path):
    cat = Catalog(tmp_path)
    later = record_grade(cat, QAGrade("case_a", 0, 0, "dr_x", T3, "fine"))
    earlier = record_grade(cat, QAGrade("case_a", 0, 2, "dr_y", T1, "liver missing"))
    record_grade(cat, QAGrade("case_b", 0, 1, "dr_x", T1))
    assert later != earlier and len(_files(cat)) == 3
    assert later.name.startswith("case_a_000_20240502T090000000000Z_")
    latest = latest_grades(cat)
    assert latest[["case_id", "round", "grade", "grader", "n_grades"]].values.tolist() == [
        ["case_a", 0, 0, "dr_x", 2],  # recorded first but graded later: it wins
        ["case_b", 0, 1, "dr_x", 1],
    ]
    assert latest.loc[0, "graded_at"] == "2024-05-02T09:00:00.000000+00:00"
    assert len(cat.read("qa_grades")) == 3  # history kept


def test_grades_are_never_overwritten(tmp_path):
    cat = Catalog(tmp_path)
    grade = QAGrade("case_a", 1, 2, "dr_x", T1)
    first = record_grade(cat, grade)
    content = first.read_bytes()
    second = record_grade(cat, grade)  # the same verdict recorded again: a second row, not a replacement
    assert first != second and first.read_bytes() == content
    assert len(cat.read("qa_grades")) == 2


def test_equal_times_tie_break_is_the_worse_grade_whatever_the_order(tmp_path):
    for order in ((0, 2), (2, 0)):
        cat = Catalog(tmp_path / f"o{order[0]}")
        for g in order:
            record_grade(cat, QAGrade("case_a", 0, g, "dr_x", T1 if g == 0 else T2))
        assert latest_grades(cat)["grade"].tolist() == [2]


def test_grade_validation_and_utc_normalisation():
    assert QAGrade("c", 0, "failure", "dr_x", T2).grade == 2
    assert QAGrade("c", 0, 1, "dr_x", T2).graded_at == "2024-05-01T10:00:00.000000+00:00"
    with pytest.raises(AlqaInputError, match="time zone"):
        QAGrade("c", 0, 1, "dr_x", "2024-05-01T10:00:00")
    with pytest.raises(AlqaInputError, match="not 0, 1"):
        QAGrade("c", 0, 3, "dr_x", T1)
    with pytest.raises(AlqaInputError, match="invalid case id"):
        QAGrade("../etc", 0, 1, "dr_x", T1)
    with pytest.raises(AlqaInputError, match="round"):
        QAGrade("c", -1, 1, "dr_x", T1)
    with pytest.raises(AlqaInputError, match="grader"):
        QAGrade("c", 0, 1, " ", T1)


def test_empty_catalog_has_no_grades(tmp_path):
    latest = latest_grades(Catalog(tmp_path))
    assert latest.empty and {"case_id", "round", "grade", "graded_at", "n_grades"} <= set(latest.columns)


# ---------------------------------------------------------------- CSV import


def _csv(tmp_path, text, name="grades.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_import(tmp_path):
    cat = Catalog(tmp_path / "catalog")
    path = _csv(
        tmp_path,
        "\ufeffcase_id,grade,round,graded_at,note\n"
        f"case_a,2,0,{T1},\"liver, spleen swapped\"\n"
        "case_b,success,0,,\n"
        "\n"
        f"case_a,usable,1,{T3},\n",
    )
    assert import_grades_csv(path, cat, grader_default="dr_z") == 3
    assert len(_files(cat)) == 1  # one batch partition
    latest = latest_grades(cat)
    assert latest[["case_id", "round", "grade", "grader"]].values.tolist() == [
        ["case_a", 0, 2, "dr_z"],
        ["case_a", 1, 1, "dr_z"],
        ["case_b", 0, 0, "dr_z"],
    ]
    assert latest.loc[0, "note"] == "liver, spleen swapped"
    assert import_grades_csv(_csv(tmp_path, "case_id,grade\n", "empty.csv"), cat, round_default=0) == 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("case_id,grade,round,grader\ncase_a,0,0,dr\ncase_b,3,0,dr\n", "line 3: grade '3'"),
        ("case_id,grade,round,grader\ncase_a,bad,0,dr\n", "line 2: grade 'bad'"),
        ("case_id,grade,round,score\ncase_a,0,0,1\n", "line 1: unknown columns ['score']"),
        ("case_id,round,grader\ncase_a,0,dr\n", "missing required columns ['grade']"),
        ("case_id,grade,round,grader\ncase_a,0,0,dr\ncase b,0,0,dr\n", "line 3: invalid case id 'case b'"),
        ("case_id,grade,round\ncase_a,0,0\n", "line 2: no grader"),
        ("case_id,grade,grader\ncase_a,0,dr\n", "line 2: no round"),
        ("case_id,grade,round,grader\ncase_a,0,x,dr\n", "line 2: round 'x'"),
        ("case_id,grade,round,grader,graded_at\ncase_a,0,0,dr,2024-05-01 10:00\n", "line 2: graded_at"),
        ("case_id,grade,round,grader\ncase_a,0,0,dr,extra\n", "line 2: more fields"),
        ("case_id,grade,round,grader\ncase_a,0,0,dr\ncase_a,2,0,dr\n", "line 3: case 'case_a' round 0 is graded twice"),
        ("", "empty file"),
    ],
)
def test_csv_errors_name_the_file_and_line_and_write_nothing(tmp_path, text, message):
    cat = Catalog(tmp_path / "catalog")
    path = _csv(tmp_path, text)
    with pytest.raises(AlqaInputError) as err:
        import_grades_csv(path, cat)
    assert err.value.path == str(path)
    assert message in err.value.reason
    assert _files(cat) == []


def test_csv_missing_file(tmp_path):
    with pytest.raises(AlqaInputError, match="does not exist"):
        import_grades_csv(tmp_path / "nope.csv", Catalog(tmp_path))


# ---------------------------------------------------------------- outlier queue


def _priority(**scores):
    rows = [{"case_id": c, "dataset": "ds", "organ": "liver", "scored": True, "relative_per_cm": s} for c, s in scores.items()]
    return rank_attention_rows(pd.DataFrame(rows))


PRIORITY = _priority(c1=0.9, c2=0.8, c3=0.7, c4=0.6, c5=0.5, c6=0.0)


def _grades(*rows):
    return pd.DataFrame(
        [{"case_id": c, "round": r, "grade": g, "grader": "dr", "graded_at": t, "grade_id": f"{i}"} for i, (c, r, g, t) in enumerate(rows)]
    )


GRADES = _grades(
    ("c2", 0, 2, T1),  # old failure
    ("c5", 1, 2, T1),  # recent failure, low attention
    ("c4", 1, 2, T1),  # recent failure, higher attention than c5
    ("x9", 1, 2, T1),  # recent failure with no attention computed
    ("c3", 1, 0, T1),  # success
    ("c1", 0, 2, T1),  # failed in round 0 ...
    ("c1", 1, 0, T3),  # ... then graded a success in round 1: not an outlier any more
)


def test_failures_first_then_attention_priority():
    queue = outlier_queue(PRIORITY, GRADES, budget=8)
    assert queue.case_ids == ("c4", "c5", "x9", "c2", "c1", "c3")  # c6 has no attention
    assert queue.budget == 8 and queue.n_ranked == 6 and queue.measure == PRIORITY.measure
    x9 = queue.entries[2]
    assert x9.rank == 0 and math.isnan(x9.score) and x9.organs == () and x9.dataset == ""
    assert queue.entries[0] == PRIORITY.entry("c4")  # ranked failures keep their priority entry
    records = queue.to_records(1)
    assert [r["position"] for r in records] == [1, 2, 3, 4, 5, 6]


def test_budget_and_exclusions():
    assert outlier_queue(PRIORITY, GRADES, budget=2).case_ids == ("c4", "c5")
    assert outlier_queue(PRIORITY, GRADES, budget=0).case_ids == ()
    assert outlier_queue(PRIORITY, GRADES, budget=5, exclude={"c4", "c1"}).case_ids == ("c5", "x9", "c2", "c3")
    no_grades = outlier_queue(PRIORITY, _grades(), budget=3)
    assert no_grades.case_ids == ("c1", "c2", "c3")
    with pytest.raises(AlqaInputError):
        outlier_queue(PRIORITY, GRADES, budget=-1)
    with pytest.raises(AlqaInputError, match="columns"):
        outlier_queue(PRIORITY, GRADES.drop(columns="graded_at"), budget=1)


def test_latest_grade_decides_and_input_is_untouched():
    regraded = pd.concat([GRADES, _grades(("c4", 1, 1, T3))], ignore_index=True)
    before = regraded.copy()
    assert outlier_queue(PRIORITY, regraded, budget=3).case_ids == ("c5", "x9", "c2")
    pd.testing.assert_frame_equal(regraded, before)


def test_predicted_failures_follow_human_ones_and_never_override_them():
    scores = pd.DataFrame(
        {"case_id": ["c1", "c3", "c6", "c2", "c5"], "round": [2, 2, 2, 2, 1], "score": [1.6, 1.9, 0.4, 1.4, 1.8]}
    )
    predicted = predicted_failures(scores, threshold=1.5)
    assert predicted[["case_id", "grade"]].values.tolist() == [["c3", 2], ["c1", 2], ["c5", 2]]
    # c3, c1: round-2 predictions newer than their round-1 human grades; c5: a human graded round 1 -> human wins
    queue = outlier_queue(PRIORITY, GRADES, budget=8, predicted=predicted)
    assert queue.case_ids == ("c4", "c5", "x9", "c2", "c3", "c1")
    assert outlier_queue(PRIORITY, GRADES, budget=5, predicted=predicted, exclude={"c3"}).case_ids == (
        "c4",
        "c5",
        "x9",
        "c2",
        "c1",
    )
    with pytest.raises(AlqaInputError, match="score"):
        predicted_failures(scores.drop(columns="score"))


def test_numpy_integers_from_catalog_rows_are_accepted():
    import numpy as np

    g = QAGrade("c", np.int64(3), np.int64(2), "dr", T1)
    assert g.round == 3 and type(g.round) is int and g.grade == 2
    assert outlier_queue(PRIORITY, GRADES, budget=np.int64(1)).case_ids == ("c4",)
    with pytest.raises(AlqaInputError, match="round"):
        QAGrade("c", 1.0, 2, "dr", T1)
