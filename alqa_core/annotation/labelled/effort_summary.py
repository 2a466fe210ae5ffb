"""Effort summaries: per round and annotator, and whether each round is still saving work.

Summaries:

- :func:`summarize_effort` per (round, annotator) (or any grouping): cases
  revised / confirmed / unchanged, minutes (sum, median per submission), mean
  Dice pseudo-vs-revised over organs present in either label, changed mL.
- :func:`round_savings` per round: the share of queued cases answered
  "unchanged" (confirmed, or revised with 0 changed voxels) and the mean
  correction volume per answered case. A round is still saving work while
  the unchanged share rises and the correction volume falls.

A case answered more than once counts once, by its latest submission
(largest ``submitted_at``, ties by ``submission_id``), the same rule as
label reassembly.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from alqa_core.annotation.labelled.effort import EFFORT_COLUMNS


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in EFFORT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"effort frame lacks columns {missing}")


def per_submission(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per submission: its fields, total changed voxels/mL, and ``unchanged``."""
    _check_frame(frame)
    firsts = frame.groupby("submission_id", sort=True)[
        ["case_id", "annotator", "round", "kind", "submitted_at", "minutes"]
    ].first()
    totals = frame.groupby("submission_id", sort=True)[["changed_voxels", "changed_ml"]].sum()
    subs = firsts.join(totals).reset_index()
    subs["unchanged"] = (subs["kind"] == "confirmed") | (subs["changed_voxels"] == 0)
    return subs


def _latest_per_case(subs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    ordered = subs.sort_values(["submitted_at", "submission_id"])
    return ordered.groupby([*keys, "case_id"], sort=False).tail(1)


def summarize_effort(frame: pd.DataFrame, by: Sequence[str] = ("round", "annotator")) -> pd.DataFrame:
    """Effort per group (default per round and annotator).

    Columns: ``submissions``; ``cases`` (distinct); ``cases_revised`` /
    ``cases_confirmed`` (distinct cases with such a submission);
    ``cases_unchanged`` and ``share_unchanged`` (by each case's latest
    submission); ``minutes_sum``, ``minutes_median`` (per submission);
    ``mean_dice`` (pseudo vs revised, over (submission, organ) rows where the
    organ is in either label; NaN if none); ``changed_ml_sum`` and
    ``mean_changed_ml`` (per submission).
    """
    keys = list(by)
    subs = per_submission(frame)
    if subs.empty:
        cols = keys + ["submissions", "cases", "cases_revised", "cases_confirmed", "cases_unchanged", "share_unchanged",
                       "minutes_sum", "minutes_median", "mean_dice", "changed_ml_sum", "mean_changed_ml"]
        return pd.DataFrame(columns=cols)
    grouped = subs.groupby(keys, sort=True)
    out = grouped.agg(
        submissions=("submission_id", "size"),
        cases=("case_id", "nunique"),
        minutes_sum=("minutes", "sum"),
        minutes_median=("minutes", "median"),
        changed_ml_sum=("changed_ml", "sum"),
        mean_changed_ml=("changed_ml", "mean"),
    )
    out["cases_revised"] = subs[subs["kind"] == "revised"].groupby(keys)["case_id"].nunique()
    out["cases_confirmed"] = subs[subs["kind"] == "confirmed"].groupby(keys)["case_id"].nunique()
    latest = _latest_per_case(subs, keys)
    out["cases_unchanged"] = latest.groupby(keys)["unchanged"].sum()
    present = frame[(frame["pseudo_ml"] > 0) | (frame["revised_ml"] > 0)]
    out["mean_dice"] = present.groupby(keys)["dice"].mean()
    counts = ["cases_revised", "cases_confirmed", "cases_unchanged"]
    out[counts] = out[counts].fillna(0).astype("int64")
    out["share_unchanged"] = out["cases_unchanged"] / out["cases"]
    order = ["submissions", "cases", "cases_revised", "cases_confirmed", "cases_unchanged", "share_unchanged",
             "minutes_sum", "minutes_median", "mean_dice", "changed_ml_sum", "mean_changed_ml"]
    return out[order].reset_index()


def round_savings(frame: pd.DataFrame, queue: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per round: is annotation still saving work?

    Columns: ``queued`` (distinct cases in ``queue``'s rows of that round, or
    the answered count without a queue), ``answered``, ``unchanged`` (latest
    answer confirmed or 0 voxels changed), ``share_unchanged`` = unchanged /
    queued, ``mean_correction_ml`` (mean total changed mL of each answered
    case's latest submission; confirmations count 0) and ``minutes_median``.
    ``queue``: the catalog ``queue`` table (``round``, ``case_id``).
    """
    subs = per_submission(frame)
    latest = _latest_per_case(subs, ["round"])
    out = latest.groupby("round", sort=True).agg(
        answered=("case_id", "nunique"),
        unchanged=("unchanged", "sum"),
        mean_correction_ml=("changed_ml", "mean"),
    )
    out["minutes_median"] = subs.groupby("round")["minutes"].median()
    if queue is not None:
        missing = [c for c in ("round", "case_id") if c not in queue.columns]
        if missing:
            raise ValueError(f"queue frame lacks columns {missing}")
        queued = queue.groupby("round")["case_id"].nunique()
        out = out.reindex(out.index.union(queued.index))
        out["queued"] = queued
        out[["answered", "unchanged"]] = out[["answered", "unchanged"]].fillna(0)
    else:
        out["queued"] = out["answered"]
    out[["queued", "answered", "unchanged"]] = out[["queued", "answered", "unchanged"]].fillna(0).astype("int64")
    out["share_unchanged"] = out["unchanged"] / out["queued"].where(out["queued"] > 0)
    return out[["queued", "answered", "unchanged", "share_unchanged", "mean_correction_ml", "minutes_median"]].reset_index()
