"""Train or fine-tune one network on (partially) labeled cases.

``train`` runs epochs of seeded foreground-favouring patches through the
masked Dice + BCE loss, validates on whole volumes after every epoch, keeps
the best epoch's weights and stops by the rule of 000_3a3cb93e44d13ddd.txt.
Fine-tuning (``parent`` given) starts from the parent checkpoint's weights at
lr 1e-4 and records the parent in the lineage. Nothing is printed: progress
goes to an optional callback as frozen events. The caller saves the result
with :func:`alqa_core.ensemble.checkpoint.save_checkpoint`.

Cases are :class:`~alqa_core.training.cases.TrainingItem` s: in memory, or
:class:`~alqa_core.training.cases.LazyCase` handles that load on demand. The
split, the organ check and the records use only their ids and organs; patches
come from a pool of at most ``training.cases_in_memory`` prepared cases that
slides over the whole training set within ``max_epochs`` (:mod:`.sampling`); validation
loads one case at a time. With every training case in the pool (small
campaigns), training is bit-identical to holding them all in one list.

Seeding happens inside ``torch.random.fork_rng``, so the caller's global RNG
state is untouched; ``num_threads`` is restored on exit.

An optional ``extra_loss`` (:class:`ExtraLoss`, e.g. the QA loss of
:mod:`alqa_core.training.qa_loss`) is called at every step, inside the same
autocast as the supervised forward, and its scalar is added to the masked
loss. Without one, the loop runs exactly the operations it always did.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol, Sequence, Union

import numpy as np
import torch

from alqa_core.config.build import plain_data
from alqa_core.config.models import DIVISIBILITY, ModelSpec
from alqa_core.config.sections import TrainConfig
from alqa_core.ensemble.checkpoint import CheckpointMeta, Lineage, checkpoint_sha256, load_checkpoint
from alqa_core.ensemble.device import resolve_device, torch_threads
from alqa_core.ensemble.networks import build_network
from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable
from alqa_core.training.cases import TrainingCase, TrainingItem
from alqa_core.training.early_stopping import EarlyStopping
from alqa_core.training.losses import masked_dice_bce_loss
from alqa_core.training.sampling import PatchSampler
from alqa_core.training.training_set import training_set_fingerprint
from alqa_core.training.validation import mean_dice, validation_dice

# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class TrainingStarted:
    n_train_cases: int
    n_val_cases: int
    device: str
    amp: bool
    lr: float
    max_epochs: int
    parent: str | None


@dataclass(frozen=True)
class EpochFinished:
    epoch: int
    train_loss: float
    val_dice: Mapping[str, float]
    val_dice_mean: float
    best_epoch: int | None
    best_dice: float
    seconds: float
    #: mean of the extra loss term over the epoch's steps (included in train_loss); None without one
    extra_loss: float | None = None


@dataclass(frozen=True)
class TrainingFinished:
    epochs_run: int
    best_epoch: int | None
    best_dice: float
    stopped_early: bool
    seconds: float


ProgressEvent = Union[TrainingStarted, EpochFinished, TrainingFinished]


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_dice: Mapping[str, float]
    val_dice_mean: float
    seconds: float
    #: mean of the extra loss term over the epoch's steps (included in train_loss); None without one
    extra_loss: float | None = None


class ExtraLoss(Protocol):
    """An extra loss term added to the supervised loss at every training step.

    Called as ``term(network, step)`` with the network in train mode, inside the
    step's autocast, ``step`` counting from 0 over the whole run; it returns a
    scalar tensor on the network's device (already weighted). ``describe()``
    gives plain data recorded in the checkpoint's ``run_info``.
    """

    def __call__(self, network: torch.nn.Module, step: int) -> torch.Tensor: ...

    def describe(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, eq=False)
class TrainResult:
    meta: CheckpointMeta
    network: torch.nn.Module  # best epoch's weights, eval mode, on the training device
    history: tuple[EpochRecord, ...]
    best_epoch: int | None
    stopped_early: bool


# ---------------------------------------------------------------- helpers


def resolve_amp(amp: bool | str, device: torch.device) -> bool:
    if amp == "auto":
        return device.type == "cuda"
    if amp and device.type != "cuda":
        raise AlqaInputError(None, f"training.amp=true needs a CUDA device, got {device}")
    return bool(amp)


def split_cases(cases: Sequence[TrainingItem], config: TrainConfig) -> tuple[list[TrainingItem], list[TrainingItem]]:
    """(train, validation): explicit ``val_case_ids``, else a seeded ``val_fraction`` (at least one each); by case id, nothing loaded."""
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise AlqaInputError(None, f"training cases have duplicate case ids {dupes}")
    # Items of one scan ("c1" and its slice-level revision "c1#slices") stay on one side of the split.
    scan_of = {i: i.split("#", 1)[0] for i in ids}
    scans = list(dict.fromkeys(scan_of.values()))
    if config.val_case_ids is not None:
        unknown = sorted(set(config.val_case_ids) - set(ids) - set(scans))
        if unknown:
            raise AlqaInputError(None, f"training.val_case_ids {unknown} are not among the training cases")
        val_scans = {scan_of.get(c, c) for c in config.val_case_ids}
    else:
        if len(scans) < 2:
            raise AlqaInputError(None, f"need at least 2 cases to hold one out for validation, got {len(scans)}")
        n_val = min(len(scans) - 1, max(1, math.ceil(len(scans) * config.val_fraction)))
        order = np.random.default_rng(config.seed).permutation(len(scans))
        val_scans = {scans[i] for i in order[:n_val]}
    train_cases = [c for c in cases if scan_of[c.case_id] not in val_scans]
    val_cases = [c for c in cases if scan_of[c.case_id] in val_scans]
    if not train_cases or not val_cases:
        raise AlqaInputError(None, f"split left {len(train_cases)} training and {len(val_cases)} validation cases; both must be >= 1")
    return train_cases, val_cases


def check_parent_matches(parent: Path, meta: CheckpointMeta, spec: ModelSpec, table: OrganTable, spacing_mm) -> None:
    if plain_data(meta.spec.to_dict()) != plain_data(spec.to_dict()):
        raise AlqaInputError(parent, f"parent model spec {meta.spec.to_dict()} differs from the requested {spec.to_dict()}")
    if meta.organ_table.to_records() != table.to_records():
        raise AlqaInputError(parent, f"parent organ table {meta.organ_table.names} differs from {table.names}")
    if not np.allclose(meta.spacing_mm, spacing_mm, atol=1e-6):
        raise AlqaInputError(parent, f"parent spacing {meta.spacing_mm} mm differs from {tuple(spacing_mm)} mm")


def _cpu_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}


def _has_annotated_foreground(case: TrainingCase, table: OrganTable) -> bool:
    values = [v for v, name in zip(table.values, table.names) if name in case.annotated_organs]
    hit = np.isin(case.label, values)
    return bool((hit & case.annotated_voxels).any() if case.annotated_voxels is not None else hit.any())


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.lr_schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=config.max_epochs, power=0.9)
    return None


def _emit(progress: Callable[[ProgressEvent], None] | None, event: ProgressEvent) -> None:
    if progress is not None:
        progress(event)


def _train_one_epoch(
    network, optimizer, scaler, sampler, config, device, amp, extra_loss: ExtraLoss | None = None, first_step: int = 0
) -> tuple[float, float | None]:
    """(mean loss, mean extra term or None) over one epoch's steps."""
    network.train()
    losses, extras = [], []
    for i in range(config.iterations_per_epoch):
        batch = sampler.batch(config.batch_size)
        image = batch.image.to(device, non_blocking=True)
        target = batch.target.to(device, non_blocking=True)
        mask = None if batch.voxel_mask is None else batch.voxel_mask.to(device, non_blocking=True)
        organ_weight = batch.organ_weight.to(device)
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
        with autocast:
            logits = network(image)
            extra = None if extra_loss is None else extra_loss(network, first_step + i)
        loss = masked_dice_bce_loss(logits, target, organ_weight, mask)  # float32 inside
        if extra is not None:
            extra = extra.float()
            loss = loss + extra
            extras.append(float(extra.detach()))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)), (float(np.mean(extras)) if extras else None)


# ---------------------------------------------------------------- train


def train(
    spec: ModelSpec,
    cases: Sequence[TrainingItem],
    config: TrainConfig,
    organ_table: OrganTable,
    spacing_mm: Sequence[float],
    parent: Path | None = None,
    round_index: int = 0,
    progress: Callable[[ProgressEvent], None] | None = None,
    training_set_sha256: str | None = None,
    extra_loss: ExtraLoss | None = None,
) -> TrainResult:
    """Train ``spec`` on ``cases`` (or fine-tune ``parent``); return the best epoch's network and metadata.

    ``cases``: :class:`TrainingCase` s or on-demand handles (:class:`~alqa_core.training.cases.LazyCase`).
    ``training_set_sha256`` defaults to a fingerprint of the cases' ids and
    label contents (loading each case once, one at a time); pass :func:`~alqa_core.training.training_set.training_set_fingerprint`
    over the label files to tie the checkpoint to files on disk instead.
    ``extra_loss`` (optional, :class:`ExtraLoss`) is added to the masked loss at
    every step; None (the default) trains on the supervised loss alone.
    """
    if extra_loss is not None and not (callable(extra_loss) and callable(getattr(extra_loss, "describe", None))):
        raise TypeError(f"extra_loss must be callable with a describe() method (ExtraLoss), got {type(extra_loss).__name__}")
    started = time.perf_counter()
    if spec.n_organs != len(organ_table):
        raise AlqaInputError(None, f"model spec has {spec.n_organs} outputs but the organ table has {len(organ_table)} organs")
    multiple = DIVISIBILITY.get(spec.arch.lower(), 1)
    if any(p % multiple for p in config.patch_size_vox):
        raise AlqaInputError(None, f"training.patch_size_vox {config.patch_size_vox} must be multiples of {multiple} for {spec.arch}")
    if not cases:
        raise AlqaInputError(None, "no training cases")
    for case in cases:
        case.organ_weights(organ_table)  # raises if a case names organs the table lacks
    train_cases, val_cases = split_cases(cases, config)
    if not any(_has_annotated_foreground(c.load(), organ_table) for c in val_cases):  # one case at a time
        raise AlqaInputError(
            None, f"validation cases {[c.case_id for c in val_cases]} contain no voxel of an organ they annotate; early stopping needs one"
        )
    device = resolve_device(config.device, "training.device")
    amp = resolve_amp(config.amp, device)
    fine_tune = parent is not None
    lr = config.resolved_lr(fine_tune)
    parent_sha = None
    if fine_tune:
        parent = Path(parent)
        loaded = load_checkpoint(parent)
        check_parent_matches(parent, loaded.meta, spec, organ_table, spacing_mm)
        parent_sha = checkpoint_sha256(parent)
    fingerprint = training_set_sha256 or training_set_fingerprint((c.case_id, c.content_sha256()) for c in cases)

    fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices), torch_threads(config.num_threads):
        torch.manual_seed(config.seed)
        network = build_network(spec)
        if fine_tune:
            network.load_state_dict(loaded.network.state_dict())
        network = network.to(device)
        optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=config.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        scheduler = _scheduler(optimizer, config)
        sampler = PatchSampler(
            train_cases, organ_table, config.patch_size_vox, config.fg_prob, config.seed,
            cases_in_memory=config.cases_in_memory, epochs=config.max_epochs,
        )
        _emit(progress, TrainingStarted(len(train_cases), len(val_cases), str(device), amp, lr, config.max_epochs, None if parent is None else str(parent)))

        stopper = EarlyStopping(config.min_delta, config.patience)
        history: list[EpochRecord] = []
        best_state = None  # stays None if no epoch produced a validation Dice: keep the last weights
        stopped_early = False
        for epoch in range(config.max_epochs):
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)  # slides a pool smaller than the training set; a no-op otherwise
            loss, extra = _train_one_epoch(
                network, optimizer, scaler, sampler, config, device, amp, extra_loss, epoch * config.iterations_per_epoch
            )
            per_organ = validation_dice(
                network, val_cases, organ_table, config.patch_size_vox, device, amp, config.sw_batch_size, config.sw_overlap
            )
            dice = mean_dice(per_organ)
            if scheduler is not None:
                scheduler.step()
            stopper = stopper.update(dice)
            if stopper.improved:
                best_state = _cpu_state(network)
            record = EpochRecord(epoch, loss, MappingProxyType(per_organ), dice, time.perf_counter() - t0, extra)
            history.append(record)
            _emit(progress, EpochFinished(epoch, loss, record.val_dice, dice, stopper.best_epoch, stopper.best_value, record.seconds, extra))
            if stopper.stop:
                stopped_early = epoch + 1 < config.max_epochs
                break
        if best_state is not None:
            network.load_state_dict(best_state)
        network.eval()

    best = stopper.best_epoch
    val_metrics: dict[str, float] = {}
    if best is not None:
        val_metrics["dice_mean"] = history[best].val_dice_mean
        val_metrics.update({f"dice_{k}": v for k, v in history[best].val_dice.items() if not math.isnan(v)})
    run_info = {
        "lr": lr,
        "device": str(device),
        "amp": amp,
        "train_case_ids": [c.case_id for c in train_cases],
        "val_case_ids": [c.case_id for c in val_cases],
        "best_epoch": best,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "seconds": time.perf_counter() - started,
    }
    if extra_loss is not None:
        run_info["extra_loss"] = plain_data(dict(extra_loss.describe()))
    meta = CheckpointMeta(
        spec=spec,
        organ_table=organ_table,
        spacing_mm=tuple(spacing_mm),
        lineage=Lineage(
            parent_path=None if parent is None else str(parent),
            parent_sha256=parent_sha,
            training_set_sha256=fingerprint,
            round_index=int(round_index),
        ),
        train_config=config.to_dict(),
        val_metrics=val_metrics,
        run_info=run_info,
    )
    _emit(progress, TrainingFinished(len(history), best, stopper.best_value, stopped_early, time.perf_counter() - started))
    return TrainResult(meta, network, tuple(history), best, stopped_early)


__all__ = [
    "EpochFinished",
    "EpochRecord",
    "ExtraLoss",
    "ProgressEvent",
    "TrainResult",
    "TrainingFinished",
    "TrainingStarted",
    "check_parent_matches",
    "resolve_amp",
    "split_cases",
    "train",
]
