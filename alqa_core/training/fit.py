"""Fitting a round's networks: one checkpoint per architecture, fine-tuned from the previous round's, and the optional QA-loss term."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig, TrainedMember
from alqa_core.config.models import ModelSpec
from alqa_core.config.sections import TrainConfig
from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable
from alqa_core.rounds import current_round, require_transition, transition
from alqa_core.training.cases import TrainingItem
from alqa_core.training.training_set import TrainingSource, fingerprint, is_holdout, sources_from_manifest
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class CheckpointSummary:
    arch: str
    path: Path
    round_index: int
    parent: Path | None
    best_epoch: int | None
    epochs: int
    stopped_early: bool
    val_metrics: dict

    def record(self) -> dict:
        return {
            "arch": self.arch,
            "round": self.round_index,
            "path": str(self.path),
            "parent": "" if self.parent is None else str(self.parent),
            "best_epoch": -1 if self.best_epoch is None else self.best_epoch,
            "epochs": self.epochs,
            "stopped_early": self.stopped_early,
            **{f"val_{k}": float(v) for k, v in self.val_metrics.items()},
        }


def qa_loss_term(
    config,
    layout: WorkspaceLayout,
    cases: pd.DataFrame,
    sources: Sequence[TrainingSource],
    table: OrganTable,
    holdout_fraction: float = 0.0,
    cases_in_memory: int | None = None,
    steps_per_refresh: int | None = None,
    refreshes: int | None = None,
):
    """The optional QA-loss term (001) over unlabeled cases, or None when off.

    ``config.case_ids``, else every preprocessed ``train``-split case outside the
    round's training set and the evaluation hold-out (so the QA term never sees
    the images the evaluation report scores). The cases are files read when
    drawn, at most ``cases_in_memory`` (None: all) held at a time, the pool
    sliding every ``steps_per_refresh`` steps (None: the QA term's default)
    fast enough to visit every case in ``refreshes`` slides (the epochs).
    """
    if config is None or not config.enabled:
        return None
    from alqa_core.training.qa_loss import STEPS_PER_REFRESH, UnlabeledFile, build_qa_loss  # torch: only when the mode is on

    trained = {s.case_id for s in sources}
    eligible = (
        r.case_id
        for r in cases.itertuples()
        if getattr(r, "split", "train") == "train"
        and r.case_id not in trained
        and not is_holdout(r.case_id, holdout_fraction)
        and layout.preprocessed(r.case_id).exists()
    )
    ids = sorted(config.case_ids or eligible)
    missing = [layout.preprocessed(c) for c in ids if not layout.preprocessed(c).exists()]
    if missing:
        raise AlqaInputError(missing[0], f"qa_loss: {len(missing)} unlabeled case(s) have no preprocessed volume")
    unlabeled = [UnlabeledFile(c, layout.preprocessed(c)) for c in ids]
    return build_qa_loss(config, unlabeled, table, cases_in_memory, steps_per_refresh or STEPS_PER_REFRESH, refreshes)


def train_member(
    layout: WorkspaceLayout,
    member: TrainedMember,
    cases: Sequence[TrainingItem],
    config: TrainConfig,
    table: OrganTable,
    spacing_mm,
    round_index: int,
    training_set_sha256: str,
    progress=None,
    extra_loss=None,
) -> CheckpointSummary:
    """Train one ensemble member (round 0, or no earlier checkpoint) or fine-tune it from its latest checkpoint; save it.

    The member's seed is ``config.seed + member.seed_offset``, so members of
    one architecture differ only in their initialisation and patches.
    """
    from alqa_core.ensemble.checkpoint import save_checkpoint
    from alqa_core.training.trainer import train

    parent = layout.latest_checkpoint(member.name, round_index - 1) if round_index > 0 else None
    spec = ModelSpec(member.arch.name, member.arch.size, len(table), member.arch.dropout)
    seeded = dataclasses.replace(config, seed=config.seed + member.seed_offset)
    result = train(spec, cases, seeded, table, spacing_mm, parent, round_index, progress, training_set_sha256, extra_loss)
    path = save_checkpoint(layout.checkpoint(member.name, round_index), result.network, result.meta)
    return CheckpointSummary(
        member.name, path, round_index, parent, result.best_epoch, len(result.history), result.stopped_early, dict(result.meta.val_metrics)
    )


@dataclass(frozen=True)
class RoundTraining:
    """What a round's training did: one summary per member trained, or why nothing was trained."""

    round_index: int
    summaries: tuple[CheckpointSummary, ...]
    skipped: str = ""


def train_round(layout: WorkspaceLayout, catalog: Catalog, config: CampaignConfig, device: str, progress=None) -> RoundTraining:
    """Train or fine-tune every member on the round's manifest, record the checkpoints, and mark the round trained.

    Cases load on demand (:func:`~alqa_core.training.data.lazy_training_cases`):
    memory holds at most ``training.cases_in_memory`` prepared training cases,
    one validation case, and as many unlabeled cases for the QA term.

    Nothing to do is not an error: with no architectures (an external-members
    campaign) or an empty training set, nothing is trained, the round is
    marked trained with the reason, and predictions use each member's latest
    checkpoint, if it has one.
    """
    from alqa_core.training.data import lazy_training_cases

    round_index = current_round(catalog)
    require_transition(catalog, round_index, "trained")  # before hours of training, not after
    sources = sources_from_manifest(catalog.read("training_set"), round_index)
    skipped = (
        "no architectures are configured (an external-members campaign): nothing to train" if not config.trained_members
        else "the training set is empty (no labelled and no reviewed case): nothing to train" if not sources else ""
    )
    summaries: list[CheckpointSummary] = []
    if not skipped:
        cases = lazy_training_cases(sources, layout)  # handles: nothing is read until the sampler's pool or validation asks
        train_cfg = dataclasses.replace(config.training, device=device)
        qa_term = qa_loss_term(
            config.qa_loss, layout, catalog.read("cases"), sources, config.organ_table, config.evaluation.holdout_fraction,
            train_cfg.cases_in_memory, train_cfg.iterations_per_epoch, train_cfg.max_epochs,
        )
        for member in config.trained_members:
            summaries.append(train_member(layout, member, cases, train_cfg, config.organ_table, config.preprocess.spacing_mm, round_index, fingerprint(sources), progress, qa_term))
            catalog.write("checkpoints", f"{member.name}_round_{round_index:03d}", pd.DataFrame([summaries[-1].record()]))
    reason = skipped or f"{len(summaries)} member(s) trained on {len(sources)} items"
    transition(catalog, round_index, "trained", reason, members_trained=len(summaries))
    return RoundTraining(round_index, tuple(summaries), skipped)
