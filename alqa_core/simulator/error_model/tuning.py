"""Tuning the attention defaults of the error-model campaign on its own seeds (100-104), never on the reported ones (0-4).

:func:`tune_attention` makes each case's error-model ensemble once and
computes its attention under every setting of a grid (cleaning radius,
uncertainty and inconsistency thresholds, smallest kept component, whether
the opening restores the mask near what survives); every
size measure of :data:`alqa_core.annotation.queue.priority.MEASURES` ranks the
cases from the same rows. The rule, from the issue's targets: among the
settings whose recall of detectable failures in the top 5% of the priority
list is at least :data:`TARGET_RECALL` (mean over the tuning seeds), the best
mean of component sensitivity (detectable errors) and precision (003
Table 1), then the best recall; when no setting reaches the target, the best
recall, then Table 1. The table of every setting is returned, best first,
so the report can show what was chosen and what it beat.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from alqa_core.annotation.queue.priority import DEFAULT_MEASURE, MEASURES
from alqa_core.config.sections import AttentionConfig
from alqa_core.ensemble.pseudo_labels import pseudo_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE, OrganTable
from alqa_core.simulator import steps
from alqa_core.simulator.error_model.cases import attention_scores, error_masks, ground_truth, landed_events, original_label, phantom_sources
from alqa_core.simulator.error_model.evidence import HEADLINE_DEPTH, EvidenceConfig, recall_curve
from alqa_core.simulator.error_model.members import failure_cases, make_members

#: the seeds tuning may look at; the report's seeds (0-4) are never tuned on
TUNING_SEEDS = (100, 101, 102, 103, 104)
#: the recall at 5% a setting must reach before Table 1 decides (issue 15's target)
TARGET_RECALL = 0.95


@dataclass(frozen=True)
class TuningGrid:
    cleaning_radius_mm: tuple[float, ...] = (3.0, 6.0, 8.0, 10.0, 12.0, 16.0)
    uncertainty_threshold: tuple[float, ...] = (0.05, 0.2)
    inconsistency_threshold: tuple[float, ...] = (0.1,)
    min_component_ml: tuple[float, ...] = (0.0, 1.0)
    cleaning_restore: tuple[bool, ...] = (True, False)

    def settings(self, base: AttentionConfig) -> list[AttentionConfig]:
        return [
            replace(base, cleaning_radius_mm=r, uncertainty_threshold=u, inconsistency_threshold=i, min_component_ml=m, cleaning_restore=rs)
            for r, u, i, m, rs in itertools.product(
                self.cleaning_radius_mm, self.uncertainty_threshold, self.inconsistency_threshold, self.min_component_ml, self.cleaning_restore
            )
        ]


def _case_under_settings(args):
    """One case: (flags, per-setting attention rows and Table 1 means)."""
    source, seed, failure, config, settings, table = args
    truth = ground_truth(source, table)
    present = set(np.unique(np.asarray(truth.array)).tolist())
    focus = tuple(o.name for o in table.organs if o.value in present and o.name not in source.annotated_organs)
    em = make_members(truth, table, config.error_model, seed, failure=failure, focus=focus)
    pseudo = pseudo_label(em.members, table)
    dataset = steps.reassembled(source.case_id, table, pseudo, original_label(truth, source.annotated_organs, table), source.annotated_organs, None)
    landed = landed_events(em, np.asarray(dataset.label.array), table)
    major = [(e, hit) for e, hit in zip(em.events, landed) if e.major]
    detectable = any(hit and not e.shared for e, hit in major)
    errors = error_masks(pseudo, truth, em, [o for o in table.names if o not in source.annotated_organs], table)
    out = []
    for k, setting in enumerate(settings):
        result = steps.attention(em.members, source.annotated_organs, setting, table, case_id=source.case_id, dataset=source.dataset)
        scores = pd.DataFrame(attention_scores(result, errors, truth.voxel_volume_ml, config.min_error_ml))
        rows = result.size.to_records(0).attention_organ
        out.append((k, rows, float(scores["sensitivity_detectable"].mean()) if len(scores) else np.nan,
                    float(scores["precision"].mean()) if len(scores) else np.nan))
    return source.case_id, source.dataset, detectable, out


def tune_attention(
    config: EvidenceConfig,
    grid: TuningGrid = TuningGrid(),
    seeds: Sequence[int] = TUNING_SEEDS,
    table: OrganTable = DEFAULT_ORGAN_TABLE,
    notify: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Every (setting, measure) on ``seeds``: recall at 5% of detectable failures, sensitivity, precision; best first."""
    overlap = set(seeds) & set(config.seeds)
    if overlap:
        raise ValueError(f"tuning seeds {sorted(overlap)} are also reported seeds: tune on other seeds")
    settings = grid.settings(config.attention)
    records = []
    for seed in seeds:
        sources = phantom_sources(config.n_cases, seed, config.spacing_mm, config.hard_fraction)
        eligible = [set(s.annotated_organs) != set(table.names) for s in sources]
        failing = failure_cases(len(sources), config.error_model.failure_share, seed, eligible)
        jobs = [(s, (seed, i), bool(f), config, settings, table) for i, (s, f) in enumerate(zip(sources, failing))]
        if notify is not None:
            notify(f"tuning seed {seed}: {len(jobs)} cases x {len(settings)} settings")
        if config.workers > 1:
            with ProcessPoolExecutor(max_workers=config.workers, mp_context=get_context("spawn")) as pool:
                cases = list(pool.map(_case_under_settings, jobs, chunksize=max(1, len(jobs) // (8 * config.workers))))
        else:
            cases = [_case_under_settings(j) for j in jobs]
        frame = pd.DataFrame([{"case_id": c[0], "dataset": c[1]} for c in cases])
        detectable = {c[0]: c[2] for c in cases}
        for k, setting in enumerate(settings):
            rows = pd.DataFrame([r for c in cases for r in c[3][k][1]])
            sens = float(np.nanmean([c[3][k][2] for c in cases]))
            prec = float(np.nanmean([c[3][k][3] for c in cases]))
            for measure in MEASURES:
                order = steps.priority(rows, frame, measure).case_ids
                curve = recall_curve(order, {"detectable": np.array([detectable[c] for c in order])}, (HEADLINE_DEPTH,))
                records.append({
                    "seed": seed, "setting": k, "cleaning_radius_mm": setting.cleaning_radius_mm,
                    "uncertainty_threshold": setting.uncertainty_threshold, "inconsistency_threshold": setting.inconsistency_threshold,
                    "min_component_ml": setting.min_component_ml, "cleaning_restore": setting.cleaning_restore, "measure": measure,
                    "recall_at_5": float(curve["recall_detectable"].iloc[0]), "sensitivity_detectable": sens, "precision": prec,
                })
    table_ = pd.DataFrame(records)
    keys = ["setting", "cleaning_radius_mm", "uncertainty_threshold", "inconsistency_threshold", "min_component_ml", "cleaning_restore", "measure"]
    summary = table_.groupby(keys, as_index=False).agg(
        recall_at_5=("recall_at_5", "mean"), recall_at_5_sd=("recall_at_5", "std"),
        sensitivity_detectable=("sensitivity_detectable", "mean"), precision=("precision", "mean"),
    )
    summary["table1"] = 0.5 * (summary["sensitivity_detectable"] + summary["precision"])
    return rank_settings(summary)


def rank_settings(summary: pd.DataFrame, target_recall: float = TARGET_RECALL) -> pd.DataFrame:
    """Best first (module doc): settings reaching the recall target by Table 1 then recall; the others after, by recall then Table 1."""
    meets = summary["recall_at_5"] >= target_recall - 1e-9
    frame = summary.assign(_default=(summary["measure"] == DEFAULT_MEASURE).astype(int))  # ties: the platform's default measure
    first = frame[meets].sort_values(["table1", "recall_at_5", "_default"], ascending=False, kind="mergesort")
    rest = frame[~meets].sort_values(["recall_at_5", "table1", "_default"], ascending=False, kind="mergesort")
    out = pd.concat([first, rest]).drop(columns="_default")
    return out.assign(meets_recall_target=out["recall_at_5"] >= target_recall - 1e-9).reset_index(drop=True)


__all__ = ["TARGET_RECALL", "TUNING_SEEDS", "TuningGrid", "rank_settings", "tune_attention"]
