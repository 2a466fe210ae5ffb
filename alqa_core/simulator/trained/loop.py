"""The campaign simulator: which selection strategy saves the most radiologist effort, on phantoms.

:func:`simulate` ingests a phantom campaign into a workspace (core functions,
no Dagster), holds out a seeded test split, trains M_0 on the original partial
labels, then, per strategy and round: predicts the pool, selects at the
round's effort budget, lets the oracle answer, fine-tunes, and scores the
ensemble on the SAME test cases for every strategy.

Choices (documented, each a deliberate simplification):

- **Ensemble**: ``members_per_arch`` members per architecture, identical but
  for their training seed (attention needs >= 2 members: Eq. 1's std across
  members is 0 for one). The test prediction is the ensemble pseudo label
  (argmax of the mean, :func:`alqa_core.ensemble.case_pseudo_label`).
- **Strategies**, all through the platform's own functions
  (:mod:`alqa_core.simulator.steps`, which the error-model simulator shares):
  ``attention`` is the priority list's queue (``priority_from_attention`` over
  the round's ``attention_organ`` rows, then ``queue_for_round``), whole
  volumes while they fit the round's effort; ``outliers`` is
  ``queue_for_round`` with ``budget.strategy: outliers``: oracle-graded
  failures first (grade from ground-truth Dice), then the attention ranking;
  the oracle's grading of every pool case each round is free (a grader's
  minutes per montage are not charged to the effort budget), which favours
  ``outliers``;
  the names of :data:`alqa_core.strategies.STRATEGIES` select slices or
  volumes from the ensemble's predictive entropy (entropy of the members'
  mean probability on the preprocessed grid; not MC dropout).
- **Effort**: :class:`~alqa_core.strategies.EffortModel` units; a whole volume of
  K slices costs ``1 + (K - 1)/3``, where K counts the preprocessed grid's axial
  slices that hold the scan (the padding added for the network is nobody's
  work, so neither volumes nor slice strategies see it). Each round is a new
  session: a case revisited in a later round pays its first slice again.
- **Training set**: validation cases (fixed, from the original labels) are
  removed from the pool. A whole-volume answer replaces the case's original
  label; a slice answer is added as a second training item
  (``<case>-oracle``) beside the original partial label, because one
  :class:`~alqa_core.training.TrainingCase` cannot say "organ A everywhere,
  all organs on these slices".
- **Attention scores** (component sensitivity / precision against FP ∪ FN of
  the pseudo label) are computed for the strategies that compute attention
  maps (``attention``, ``outliers``) over all pool cases of the round; NaN for the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from alqa_core.annotation.queue.priority import DEFAULT_MEASURE
from alqa_core.attention.case import case_attention
from alqa_core.config.models import ModelSpec
from alqa_core.config.sections import AttentionConfig, InferenceConfig, PreprocessConfig, TrainConfig
from alqa_core.ensemble.checkpoint import load_checkpoint, save_checkpoint
from alqa_core.ensemble.inference import binary_entropy, predict_probabilities
from alqa_core.ensemble.members import load_preprocessed
from alqa_core.ensemble.predict import predict_cases
from alqa_core.ensemble.pseudo_labels import read_case_pseudo_label
from alqa_core.errors import AlqaInputError
from alqa_core.evaluation.attention_eval import evaluate_attention
from alqa_core.evaluation.segmentation import evaluate_case
from alqa_core.ingest.cases import ingest_label, ingest_scan, preprocess_scan
from alqa_core.ingest.dataset import read_datasets
from alqa_core.io.nifti import read_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE, OrganTable
from alqa_core.simulator import steps
from alqa_core.simulator.oracle import answer_slices, answer_volume, ground_truth_path, hard_case_share, oracle_grade, present_organs, read_manifest
from alqa_core.strategies.effort_model import EffortModel
from alqa_core.strategies.registry import STRATEGIES
from alqa_core.strategies.selection import Selection, SliceSelection
from alqa_core.strategies.uncertainty import case_uncertainty
from alqa_core.training.cases import TrainingCase
from alqa_core.training.data import load_training_case
from alqa_core.training.trainer import train
from alqa_core.training.training_set import TrainingSource
from alqa_core.workspace import WorkspaceLayout

VOLUME_QUEUES = steps.VOLUME_QUEUES


@dataclass(frozen=True)
class SimulationConfig:
    strategies: tuple[str, ...] = ("attention", "uss", "rvs")
    rounds: int = 2
    #: effort units per round (see module doc)
    budget_per_round: float = 20.0
    architectures: tuple[str, ...] = ("unet",)
    model_size: str = "tiny"
    members_per_arch: int = 2
    train: TrainConfig = field(default_factory=lambda: TrainConfig(patch_size_vox=(32, 32, 32), max_epochs=3, iterations_per_epoch=4))
    inference: InferenceConfig = field(default_factory=lambda: InferenceConfig(roi_size_vox=(64, 64, 64), sw_batch_size=2))
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    #: attention size measure of the priority list (:data:`alqa_core.annotation.queue.priority.MEASURES`)
    measure: str = DEFAULT_MEASURE
    effort_model: EffortModel = field(default_factory=EffortModel)
    #: preprocessing spacing; None = the campaign's own spacing (read from the first scan)
    spacing_mm: tuple[float, float, float] | None = None
    test_fraction: float = 0.3
    n_val_cases: int = 1
    nsd_tolerance_mm: float = 2.0
    seed: int = 0
    #: epochs of each round's fine-tune (None: ``train.max_epochs``, as M_0)
    finetune_max_epochs: int | None = None

    def __post_init__(self):
        strategies = tuple(self.strategies)
        known = set(STRATEGIES) | set(VOLUME_QUEUES)
        bad = [s for s in strategies if s not in known]
        if not strategies or bad or len(set(strategies)) != len(strategies):
            raise AlqaInputError(None, f"simulation strategies must be distinct names of {sorted(known)}, got {list(strategies)}")
        object.__setattr__(self, "strategies", strategies)
        object.__setattr__(self, "architectures", tuple(self.architectures))
        if self.rounds < 1 or self.members_per_arch < 1 or self.n_val_cases < 1:
            raise AlqaInputError(None, "rounds, members_per_arch and n_val_cases must be >= 1")
        if len(self.architectures) * self.members_per_arch < 2:
            raise AlqaInputError(None, "attention needs an ensemble of >= 2 members (architectures x members_per_arch)")
        if not (np.isfinite(self.budget_per_round) and self.budget_per_round > 0):
            raise AlqaInputError(None, f"budget_per_round must be > 0 effort units, got {self.budget_per_round}")
        if self.finetune_max_epochs is not None and self.finetune_max_epochs < 1:
            raise AlqaInputError(None, f"finetune_max_epochs must be >= 1, got {self.finetune_max_epochs}")
        if not 0.0 < self.test_fraction < 1.0:
            raise AlqaInputError(None, f"test_fraction must be in (0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class SimulationProgress:
    stage: str  # "ingest" | "train" | "round" | "done"
    strategy: str
    round_index: int
    message: str


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """``rounds``: one row per (strategy, round) (round 0 = M_0, shared); ``test_metrics``: per (strategy, round, case, organ)."""

    config: SimulationConfig
    rounds: pd.DataFrame
    test_metrics: pd.DataFrame
    selections: pd.DataFrame  # strategy, round, case_id, n_slices, whole_volume
    test_case_ids: tuple[str, ...]
    val_case_ids: tuple[str, ...]
    seconds: float


ROUND_COLUMNS = (
    "strategy", "round", "dice", "nsd", "hd95_mm", "effort", "cumulative_effort", "budget",
    "n_selected_cases", "n_selected_slices", "hard_share", "attention_sensitivity", "attention_precision", "seconds",
)


# ------------------------------------------------------------------ setup


def _ingest(campaign_root: Path, layout: WorkspaceLayout, table: OrganTable, spacing_mm, notify) -> tuple[dict, tuple[float, ...]]:
    """Raw scans, original labels and preprocessed volumes of every case; returns case_id -> CaseRecord."""
    roots = sorted(p for p in (campaign_root / "datasets").iterdir() if (p / "dataset.json").is_file())
    if not roots:
        raise AlqaInputError(campaign_root / "datasets", "no nnU-Net datasets in the campaign")
    records = read_datasets(roots, table)
    cases = {c.case_id: (c, d) for d in records for c in d.cases}
    spacing = None
    for i, case_id in enumerate(sorted(cases)):
        case, dataset = cases[case_id]
        summary = ingest_scan(case, layout.raw_scan(case_id))
        spacing = spacing or tuple(spacing_mm or summary.spacing_mm)
        ingest_label(case, dataset, table, layout.raw_scan(case_id), layout.original_label(case_id))
        preprocess_scan(layout.raw_scan(case_id), layout.preprocessed(case_id), layout.grid_record(case_id), PreprocessConfig(spacing_mm=spacing))
        notify("ingest", "", 0, f"{i + 1}/{len(cases)} {case_id}")
    return {k: v[0] for k, v in cases.items()}, spacing


def _split(case_ids: Sequence[str], cases: dict, layout, config: SimulationConfig) -> tuple[list[str], list[str], list[str]]:
    """(test, validation, pool): a seeded test split of all cases; validation = labelled non-test cases with foreground."""
    ids = sorted(case_ids)
    rng = np.random.default_rng([config.seed, 7])
    n_test = max(1, int(round(len(ids) * config.test_fraction)))
    test = sorted(ids[i] for i in rng.permutation(len(ids))[:n_test])
    val = []
    for cid in ids:
        if cid in test or not cases[cid].annotated_organs:
            continue
        if np.asarray(read_label(layout.original_label(cid)).array).any():
            val.append(cid)
        if len(val) == config.n_val_cases:
            break
    if len(val) < config.n_val_cases:
        raise AlqaInputError(None, f"need {config.n_val_cases} labelled non-test cases with foreground for validation, found {len(val)}")
    pool = [c for c in ids if c not in test and c not in val]
    return test, val, pool


def _members(config: SimulationConfig) -> list[tuple[str, ModelSpec, int]]:
    out = []
    for arch in config.architectures:
        for k in range(config.members_per_arch):
            out.append((f"{arch}_{k}", ModelSpec(arch, config.model_size, len(DEFAULT_ORGAN_TABLE)), k))
    return out


def _train_members(members, cases, config, table, spacing, parents, out_dir: Path, round_index: int) -> dict[str, Path]:
    """Train (or fine-tune from ``parents``) every member; checkpoints under ``out_dir``."""
    out = {}
    for name, spec, k in members:
        cfg = replace(config.train, seed=config.seed * 1000 + k)  # members differ only in their seed
        result = train(spec, cases, cfg, table, spacing, parent=None if parents is None else parents[name], round_index=round_index)
        out[name] = save_checkpoint(out_dir / f"{name}.pt", result.network, result.meta)
    return out


# ------------------------------------------------------------------ per round


def _evaluate_test(layout, test_ids, checkpoints, config, table, campaign_root, round_index) -> list[dict]:
    predict_cases(layout, test_ids, sorted(checkpoints.items()), {}, config.inference, table, round_index)
    rows = []
    for cid in test_ids:
        gt = read_label(ground_truth_path(campaign_root, cid))
        pred = read_case_pseudo_label(layout, cid, round_index)
        for m in evaluate_case(pred, gt, table, present_organs(gt, table), config.nsd_tolerance_mm, cid):
            rows.append({"case_id": cid, "organ": m.organ, "dice": m.dice, "nsd": m.nsd, "hd95_mm": m.hd95_mm})
    return rows


def _attention_round(strategy, layout, pool, cases, checkpoints, config, table, campaign_root, round_index, extent, budget):
    """Attention/outlier queue over the pool (the platform's priority list and queue); returns the selection and (sensitivity, precision)."""
    predict_cases(layout, pool, sorted(checkpoints.items()), {}, config.inference, table, round_index)
    rows, scores, grades = [], [], []
    for cid in pool:
        result = case_attention(layout, cid, cases[cid].dataset, cases[cid].annotated_organs, config.attention, table, round_index)
        rows += list(result.size.to_records(round_index).attention_organ)
        gt = read_label(ground_truth_path(campaign_root, cid))
        pseudo = read_case_pseudo_label(layout, cid, round_index)
        maps = {o: result.organ_heatmap(o) for o in result.organs}
        scores += [s for s in evaluate_attention(maps, pseudo, gt, table, case_id=cid)]
        if strategy == "outliers":
            grades.append({"case_id": cid, "round": round_index, "grade": oracle_grade(pseudo, gt, table, cid),
                           "graded_at": steps.ORACLE_EPOCH.isoformat(), "grader": "oracle"})
    frame = pd.DataFrame([{"case_id": c, "dataset": cases[c].dataset} for c in pool])
    priority = steps.priority(pd.DataFrame(rows), frame, config.measure)
    cost = {c: config.effort_model.case_cost(len(extent[c])) for c in pool}
    queue = steps.volume_queue(strategy, priority, budget, cost, grades=pd.DataFrame(grades) if grades else None)
    selection = Selection(strategy, tuple(SliceSelection(c, tuple(extent[c])) for c in queue.case_ids), float(sum(cost[c] for c in queue.case_ids)))
    sens = float(np.nanmean([s.sensitivity for s in scores])) if any(np.isfinite(s.sensitivity) for s in scores) else float("nan")
    prec = float(np.nanmean([s.precision for s in scores])) if any(np.isfinite(s.precision) for s in scores) else float("nan")
    return selection, (sens, prec)


def scan_slices(image: np.ndarray) -> range:
    """The preprocessed grid's axial slices that hold the scan (padding is exactly 0 after the HU window)."""
    k = np.flatnonzero(np.asarray(image).any(axis=(0, 1)))
    return range(int(k.min()), int(k.max()) + 1) if k.size else range(0)


def _uncertainty_round(strategy, layout, pool, answered_slices, checkpoints, config, round_index, budget, exclude, extent):
    """A :data:`STRATEGIES` selection from the ensemble's predictive entropy, over the scan's slices (``extent``)."""
    nets = [load_checkpoint(p).network for _, p in sorted(checkpoints.items())]
    pool_u = []
    for cid in pool:
        if cid in exclude:
            continue
        image = load_preprocessed(layout, cid).array
        k0, k1 = extent[cid].start, extent[cid].stop
        mean = np.mean([predict_probabilities(n, image, config.inference) for n in nets], axis=0)[..., k0:k1]
        done = tuple(sorted(k - k0 for k in answered_slices.get(cid, ())))
        pool_u.append(case_uncertainty(cid, binary_entropy(mean), mean, annotated_slices=done))
    chosen = steps.slice_selection(strategy, pool_u, budget, seed=config.seed * 100 + round_index, exclude_cases=exclude, effort_model=config.effort_model)
    items = tuple(SliceSelection(i.case_id, tuple(k + extent[i.case_id].start for k in i.slices)) for i in chosen.items)
    return Selection(chosen.strategy, items, chosen.effort_slices)


def _training_set(pool, originals, truths, whole, answered_slices, table, val_cases) -> list[TrainingCase]:
    out = list(val_cases)
    for cid in pool:
        if cid in whole:
            out.append(answer_volume(truths[cid], table))
            continue
        if cid in originals:
            out.append(originals[cid])
        if answered_slices.get(cid):
            out.append(answer_slices(truths[cid], answered_slices[cid], table, case_id=f"{cid}-oracle"))
    return out


def _summary_row(strategy, round_index, metrics, effort, cumulative, budget, selected, n_slices, manifest, att, seconds) -> dict:
    frame = pd.DataFrame(metrics)
    per_organ = frame.groupby("organ")[["dice", "nsd", "hd95_mm"]].mean()
    return {
        "strategy": strategy,
        "round": int(round_index),
        "dice": float(per_organ["dice"].mean()),
        "nsd": float(per_organ["nsd"].mean()),
        "hd95_mm": float(per_organ["hd95_mm"].mean()),
        "effort": float(effort),
        "cumulative_effort": float(cumulative),
        "budget": float(budget),
        "n_selected_cases": len(selected),
        "n_selected_slices": int(n_slices),
        "hard_share": hard_case_share(selected, manifest),
        "attention_sensitivity": att[0],
        "attention_precision": att[1],
        "seconds": float(seconds),
    }


# ------------------------------------------------------------------ entry point


def simulate(
    campaign_root: str | Path,
    workdir: str | Path,
    config: SimulationConfig = SimulationConfig(),
    progress: Callable[[SimulationProgress], None] | None = None,
    table: OrganTable = DEFAULT_ORGAN_TABLE,
) -> SimulationResult:
    """Run every strategy of ``config`` for ``config.rounds`` rounds on a phantom campaign (module doc)."""
    started = time.perf_counter()
    campaign_root, workdir = Path(campaign_root), Path(workdir)

    def notify(stage, strategy, round_index, message):
        if progress is not None:
            progress(SimulationProgress(stage, strategy, round_index, message))

    manifest = read_manifest(campaign_root)
    layout = WorkspaceLayout(workdir / "workspace")
    cases, spacing = _ingest(campaign_root, layout, table, config.spacing_mm, notify)
    test, val, pool = _split(list(cases), cases, layout, config)
    source = lambda cid, path, organs: load_training_case(TrainingSource(cid, path, tuple(organs), "simulation"), layout)  # noqa: E731
    originals = {c: source(c, layout.original_label(c), cases[c].annotated_organs) for c in pool if cases[c].annotated_organs}
    truths = {c: source(c, ground_truth_path(campaign_root, c), table.names) for c in pool}
    val_cases = [source(c, layout.original_label(c), cases[c].annotated_organs) for c in val]
    extent = {c: scan_slices(truths[c].image) for c in pool}
    n_slices = {c: len(extent[c]) for c in pool}
    members = _members(config)
    train_cfg = replace(config.train, val_case_ids=tuple(val))
    cfg = replace(config, train=train_cfg)
    finetune_cfg = replace(cfg, train=replace(train_cfg, max_epochs=config.finetune_max_epochs or train_cfg.max_epochs))

    notify("train", "", 0, "M_0 on the original partial labels")
    t0 = time.perf_counter()
    m0 = _train_members(members, _training_set(pool, originals, truths, set(), {}, table, val_cases), cfg, table, spacing, None,
                        workdir / "checkpoints" / "initial" / "round_000", 0)
    base_metrics = _evaluate_test(layout, test, m0, cfg, table, campaign_root, 0)
    base_seconds = time.perf_counter() - t0

    rounds, metrics, selections = [], [], []
    for strategy in config.strategies:
        rounds.append(_summary_row(strategy, 0, base_metrics, 0.0, 0.0, 0.0, [], 0, manifest, (float("nan"),) * 2, base_seconds))
        metrics += [{"strategy": strategy, "round": 0, **m} for m in base_metrics]
        checkpoints, whole, answered, cumulative = m0, set(), {}, 0.0
        for r in range(1, config.rounds + 1):
            t0 = time.perf_counter()
            notify("round", strategy, r, "select")
            att = (float("nan"), float("nan"))
            candidates = [c for c in pool if c not in whole]
            if strategy in VOLUME_QUEUES:
                selection, att = _attention_round(strategy, layout, candidates, cases, checkpoints, cfg, table, campaign_root,
                                                  r, extent, config.budget_per_round)
            else:
                selection = _uncertainty_round(strategy, layout, candidates, answered, checkpoints, cfg, r, config.budget_per_round, whole, extent)
            for item in selection.items:
                if len(item.slices) == n_slices[item.case_id]:
                    whole.add(item.case_id)
                else:
                    answered.setdefault(item.case_id, set()).update(item.slices)
                selections.append({"strategy": strategy, "round": r, "case_id": item.case_id, "n_slices": len(item.slices),
                                   "whole_volume": item.case_id in whole})
            cumulative += selection.effort_slices
            notify("round", strategy, r, f"fine-tune on {len(selection.items)} answered cases")
            cases_r = _training_set(pool, originals, truths, whole, answered, table, val_cases)
            checkpoints = _train_members(members, cases_r, finetune_cfg, table, spacing, checkpoints,
                                         workdir / "checkpoints" / strategy / f"round_{r:03d}", r)
            round_metrics = _evaluate_test(layout, test, checkpoints, cfg, table, campaign_root, r)
            metrics += [{"strategy": strategy, "round": r, **m} for m in round_metrics]
            rounds.append(_summary_row(strategy, r, round_metrics, selection.effort_slices, cumulative, config.budget_per_round,
                                       selection.case_ids, selection.n_slices, manifest, att, time.perf_counter() - t0))
    notify("done", "", config.rounds, f"{len(config.strategies)} strategies x {config.rounds} rounds")
    return SimulationResult(
        config,
        pd.DataFrame(rounds, columns=list(ROUND_COLUMNS)),
        pd.DataFrame(metrics, columns=["strategy", "round", "case_id", "organ", "dice", "nsd", "hd95_mm"]),
        pd.DataFrame(selections, columns=["strategy", "round", "case_id", "n_slices", "whole_volume"]),
        tuple(test),
        tuple(val),
        time.perf_counter() - started,
    )


__all__ = ["ROUND_COLUMNS", "VOLUME_QUEUES", "SimulationConfig", "SimulationProgress", "SimulationResult", "simulate"]
