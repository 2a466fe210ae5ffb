"""Training on partial labels: masked loss, patch sampling, early stopping, the train loop."""

from alqa_core.training.cases import TrainingCase, one_hot_organs
from alqa_core.training.early_stopping import EarlyStopping, best_epoch, should_stop
from alqa_core.training.losses import masked_dice_bce_loss, masked_soft_dice_per_organ
from alqa_core.training.sampling import Batch, Patch, PatchSampler, prepare_case, sample_patch
from alqa_core.training.trainer import (
    LR_FINE_TUNE,
    LR_FROM_SCRATCH,
    EpochFinished,
    EpochRecord,
    ProgressEvent,
    TrainConfig,
    TrainingFinished,
    TrainingStarted,
    TrainResult,
    train,
)
from alqa_core.training.validation import case_dice, mean_dice, predict_logits, validation_dice

__all__ = [
    "LR_FINE_TUNE",
    "LR_FROM_SCRATCH",
    "Batch",
    "EarlyStopping",
    "EpochFinished",
    "EpochRecord",
    "Patch",
    "PatchSampler",
    "ProgressEvent",
    "TrainConfig",
    "TrainResult",
    "TrainingCase",
    "TrainingFinished",
    "TrainingStarted",
    "best_epoch",
    "case_dice",
    "masked_dice_bce_loss",
    "masked_soft_dice_per_organ",
    "mean_dice",
    "one_hot_organs",
    "predict_logits",
    "prepare_case",
    "sample_patch",
    "should_stop",
    "train",
    "validation_dice",
]
