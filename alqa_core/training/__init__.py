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
    ExtraLoss,
    ProgressEvent,
    TrainConfig,
    TrainingFinished,
    TrainingStarted,
    TrainResult,
    train,
)
from alqa_core.training.validation import case_dice, mean_dice, predict_logits, validation_dice

# The QA loss (training.qa_loss) needs alqa_core.qa, and alqa_core.qa.regressor
# imports training.trainer: importing it here eagerly would make
# ``import alqa_core.qa`` circular. Its names are resolved on first use (PEP 562).
_QA_LOSS_NAMES = ("QALossConfig", "QALossTerm", "UnlabeledCase", "build_qa_loss")


def __getattr__(name: str):
    if name in _QA_LOSS_NAMES:
        from alqa_core.training import qa_loss

        return getattr(qa_loss, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LR_FINE_TUNE",
    "LR_FROM_SCRATCH",
    "Batch",
    "EarlyStopping",
    "EpochFinished",
    "EpochRecord",
    "ExtraLoss",
    "Patch",
    "PatchSampler",
    "ProgressEvent",
    "QALossConfig",
    "QALossTerm",
    "TrainConfig",
    "TrainResult",
    "TrainingCase",
    "TrainingFinished",
    "TrainingStarted",
    "UnlabeledCase",
    "best_epoch",
    "build_qa_loss",
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
