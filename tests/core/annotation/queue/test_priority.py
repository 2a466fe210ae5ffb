"""Priority list, the round's queue and the stop rule (003 §3.2)."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from alqa_core.annotation.intake.inbox import SubmissionMeta
from alqa_core.annotation.queue.priority import (
    PriorityEntry,
    PriorityList,
    priority_list,
    queue_budget,
    rank_attention_rows,
    rank_frame,
    select_queue,
    stop_rule,
)
from alqa_core.attention.compute import compute_attention
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError


def _case(case_id, dataset="d", **organs) -> pd.DataFrame:
    """A case's ``attention_organ`` rows; organs: name -> (attention_ml, relative_per_cm). No organ: one unscored row."""
    rows = [{"case_id": case_id, "round": 0, "dataset": dataset, "organ": o, "scored": True, "attention_ml": ml, "relative_per_cm": rel,
             "relative": rel} for o, (ml, rel) in organs.items()]
    none = {"case_id": case_id, "round": 0, "dataset": dataset, "organ": "liver", "scored": False, "attention_ml": 0.0, "relative_per_cm": 0.0, "relative": 0.0}
    return pd.DataFrame(rows or [none])


def rank_cases(cases, measure="relative_per_cm") -> PriorityList:
    return rank_attention_rows(pd.concat(list(cases), ignore_index=True), measure=measure)


CASES = [
    _case("c1", liver=(30.0, 0.01), gallbladder=(2.0, 0.04)),  # large in mL, small relative to the liver
    _case("c2", pancreas=(4.0, 0.20)),
    _case("c3", spleen=(1.0, 0.03), kidney_left=(1.0, 0.03)),
    _case("c0", spleen=(1.0, 0.06)),  # ties c3 on the default measure: c0 < c3 by id
    _case("c4"),  # no attention
]


def test_order_by_attention_size_with_deterministic_ties():
    pl = rank_cases(CASES)
    assert pl.measure == "relative_per_cm"
    assert pl.case_ids == ("c2", "c0", "c3", "c1", "c4")
    assert [e.rank for e in pl.entries] == [1, 2, 3, 4, 5]
    for _ in range(5):
        shuffled = CASES[:]
        random.Random(_).shuffle(shuffled)
        assert rank_cases(shuffled).case_ids == pl.case_ids
    assert rank_cases(CASES, measure="attention_ml").case_ids == ("c1", "c2", "c3", "c0", "c4")


def test_organs_in_the_order_to_fix():
    pl = rank_cases(CASES)
    assert pl.entry("c1").organs == ("gallbladder", "liver")
    assert pl.entry("c1").organ_scores == (0.04, 0.01)
    assert pl.entry("c3").organs == ("kidney_left", "spleen")  # tie: by name
    assert rank_cases(CASES, measure="attention_ml").entry("c1").organs == ("liver", "gallbladder")
    assert pl.entry("c4").organs == () and pl.entry("c4").score == 0


def test_budget_fraction_count_and_minimum():
    assert queue_budget(100) == 5
    assert queue_budget(30) == 2  # ceil(1.5)
    assert queue_budget(4) == 1  # at least one
    assert queue_budget(4, min_cases=0) == 1  # ceil(0.2)
    assert queue_budget(0, min_cases=0) == 0
    assert queue_budget(100, count=7) == 7
    assert queue_budget(40, fraction=0.25) == 10
    with pytest.raises(AlqaInputError):
        queue_budget(10, fraction=1.5)
    pl = rank_cases(CASES)
    assert select_queue(pl).case_ids == ("c2",)  # 5% of 5 -> at least 1
    assert select_queue(pl, count=3).case_ids == ("c2", "c0", "c3")
    assert select_queue(pl, count=10).case_ids == ("c2", "c0", "c3", "c1")  # never a case without attention
    assert select_queue(pl, fraction=0.5).budget == 3


def test_exclusions_skip_revised_and_confirmed_cases():
    pl = rank_cases(CASES)
    q = select_queue(pl, count=2, revised={"c2"}, confirmed=["c3"])
    assert q.case_ids == ("c0", "c1")
    assert q.top_case == "c0"
    assert select_queue(pl, count=2, revised={"c2", "c0", "c3", "c1"}).case_ids == ()
    nothing = rank_cases([_case("a"), _case("b")])
    assert select_queue(nothing).case_ids == ()


def test_stop_rule_on_the_top_case():
    q = select_queue(rank_cases(CASES), count=2)
    assert q.case_ids == ("c2", "c0")
    meta = lambda case_id, kind: SubmissionMeta(case_id, "dr_a", kind, "2026-11-23T10:00:00+00:00")  # noqa: E731
    assert not stop_rule(q, []).converged
    assert stop_rule(q, [meta("c2", "confirmed")]).converged
    assert not stop_rule(q, [meta("c0", "confirmed")]).converged  # not the top case
    d = stop_rule(q, [meta("c2", "revised")])
    assert not d.converged and d.top_case == "c2" and "revised" in d.reason
    assert not stop_rule(q, [meta("c2", "confirmed"), meta("c2", "revised")]).converged
    rows = [{"case_id": "c2", "kind": "confirmed", "submission_id": "s1"}]  # catalog rows work too
    assert stop_rule(q.case_ids, rows).converged
    assert stop_rule([], []).converged  # nothing left to review
    with pytest.raises(AlqaInputError, match="kind"):
        stop_rule(q, [{"case_id": "c2", "kind": "maybe"}])
    with pytest.raises(AlqaInputError, match="kind"):
        stop_rule(q, [{"case_id": "c2"}])


def test_bad_rows():
    with pytest.raises(AlqaInputError, match="twice"):
        rank_cases([_case("a", liver=(1.0, 0.1)), _case("a", liver=(1.0, 0.1))])
    with pytest.raises(AlqaInputError, match="measure"):
        rank_cases(CASES, measure="size")
    with pytest.raises(AlqaInputError, match="finite"):
        rank_cases([_case("a", liver=(float("nan"), 0.1))], measure="attention_ml")


def _attention_case(case_id, dataset, blob_mm):
    """An organ all members agree on, and a cube of ``blob_mm`` only member 0 sees."""
    block = np.zeros((3, 2, 24, 24, 16), np.uint8)
    block[:, 0, 2:12, 2:12, 2:12] = 255
    n = blob_mm // 2
    block[0, 1, 14 : 14 + n, 14 : 14 + n, 2 : 2 + n] = 255
    return compute_attention(
        block, organs=["liver", "pancreas"], spacing_mm=(2.0, 2.0, 2.0), case_id=case_id, dataset=dataset,
        annotated_organs={"liver"},
    )


def test_from_attention_through_the_catalog_to_the_queue(tmp_path):
    from alqa_core.annotation.queue.round_queue import read_priority

    catalog = Catalog(tmp_path / "catalog")
    sizes = {"small": 8, "large": 16, "none": 0, "mid": 12}
    for case_id, blob in sizes.items():
        rec = _attention_case(case_id, "ds1", blob).size.to_records(round_index=0)
        catalog.write("attention_organ", f"round=0_{case_id}", pd.DataFrame(rec.attention_organ))
    rows = catalog.query("SELECT * FROM attention_organ WHERE round = 0")
    pl = rank_attention_rows(rows, measure="attention_ml")
    assert pl.case_ids == ("large", "mid", "small", "none")
    assert all(e.dataset == "ds1" and e.organs == ("pancreas",) for e in pl.entries if e.case_id != "none")
    direct = [_attention_case(c, "ds1", b).size for c, b in sorted(sizes.items(), key=lambda x: -x[1])]
    assert [e.score for e in pl.entries] == pytest.approx([sum(o.attention_ml for o in s.organs if o.scored) for s in direct])
    records = pl.to_records(round_index=0)
    assert [r["rank"] for r in records] == [1, 2, 3, 4] and records[0]["organs"] == ["pancreas"]
    catalog.write("priority", "round_000", pd.DataFrame(records))
    assert read_priority(catalog, 0) == pl  # the queue reads the list the priority step kept: the same list, not a new ranking
    with pytest.raises(AlqaInputError, match="no priority list"):
        read_priority(catalog, 1)
    q = select_queue(read_priority(catalog, 0), fraction=0.5)
    catalog.write("queue", "round=0", pd.DataFrame(q.to_records(round_index=0)))
    back = catalog.query("SELECT case_id FROM queue ORDER BY position")["case_id"].tolist()
    assert back == ["large", "mid"]


def _attention_rows(n_cases: int, seed: int) -> pd.DataFrame:
    """attention_organ-like rows: some organs unscored, many zeros, exact ties, a case with no scored organ, shuffled."""
    rng = np.random.default_rng(seed)
    organs = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "pancreas"]
    frame = pd.DataFrame({
        "case_id": np.repeat([f"c{i:04d}" for i in range(n_cases)], len(organs)),
        "round": 0,
        "dataset": np.repeat(rng.choice(["ds1", "ds2", ""], n_cases), len(organs)),
        "organ": np.tile(organs, n_cases),
        "scored": rng.random(n_cases * len(organs)) > 0.2,
    })
    for m in ("relative_per_cm", "attention_ml"):
        values = np.where(rng.random(len(frame)) > 0.5, rng.choice([0.25, 0.5, rng.random()], len(frame)), 0.0)
        frame[m] = values
    frame.loc[frame.case_id == "c0003", "scored"] = False
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _reference_ranking(rows: pd.DataFrame, measure: str, datasets: dict) -> PriorityList:
    """The ranking rule written plainly, one case at a time (the oracle for the vectorised ranker)."""
    cases = []
    for case_id, part in rows.groupby("case_id", sort=False):
        scored = part[part.scored.fillna(True).astype(bool)]
        values = [(str(o), float(v)) for o, v in zip(scored.organ, scored[measure])]
        score = 0.0
        for _, v in values:  # row order, as the vectorised ranker sums
            score = score + v
        dataset = str(part.dataset.iloc[-1] or "") or datasets.get(case_id, "")
        cases.append((score, str(case_id), dataset, sorted((x for x in values if x[1] > 0), key=lambda x: (-x[1], x[0]))))
    cases.sort(key=lambda c: (-c[0], c[1]))
    return PriorityList(measure, tuple(PriorityEntry(i + 1, c, d, s, tuple(o for o, _ in order), tuple(v for _, v in order))
                                       for i, (s, c, d, order) in enumerate(cases)))


@pytest.mark.parametrize("measure", ["relative_per_cm", "attention_ml"])
def test_vectorised_ranking_equals_the_plain_rule(measure):
    rows = _attention_rows(400, seed=3)
    datasets = {"c0001": "from_cases_table"}
    old = _reference_ranking(rows, measure, datasets)
    new = rank_attention_rows(rows, measure=measure, datasets=datasets)
    assert new == old  # same order, ties, organs in order, datasets, and bit-identical scores
    assert new.entry("c0003").score == 0 and new.entry("c0003").organs == ()
    frame = rank_frame(rows, measure=measure, datasets=datasets)
    assert frame["rank"].tolist() == list(range(1, 401)) and frame.case_id.tolist() == list(old.case_ids)
    assert [tuple(o) for o in frame.organs] == [e.organs for e in old.entries]
    assert priority_list(frame.sample(frac=1.0, random_state=1), measure) == new  # read back by rank, whatever the row order


def test_vectorised_ranking_refuses_bad_rows():
    rows = _attention_rows(5, seed=1)
    assert rank_frame(rows.iloc[0:0]).empty
    bad = rows.copy()
    bad.loc[bad.scored.idxmax(), "relative_per_cm"] = float("nan")
    with pytest.raises(AlqaInputError, match="finite"):
        rank_frame(bad)
    with pytest.raises(AlqaInputError, match="twice"):
        rank_frame(pd.concat([rows, rows.iloc[:1]]))
    with pytest.raises(AlqaInputError, match="measure"):
        rank_frame(rows, measure="size")
