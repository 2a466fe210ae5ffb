"""Stage 5, training: the round's training set, training on partial labels, fine-tuning.

- :mod:`.round_start`: opening a round (its index, its training set, its state row);
- :mod:`.training_set`: which label teaches which organs of which case; the manifest; the hold-out;
- :mod:`.data`: training items on the preprocessed grid;
- :mod:`.cases`: the training item (image, partial label, annotated organs and voxels);
- :mod:`.losses`: masked Dice + BCE (w=0 where nothing is annotated) (torch);
- :mod:`.sampling`: foreground-favouring patches (torch);
- :mod:`.pool`: a bounded, seeded pool of loaded cases moving over the training set;
- :mod:`.early_stopping`: stop when validation Dice gains < 0.001 in 10 epochs (000);
- :mod:`.validation`: per-organ Dice on whole volumes (torch);
- :mod:`.trainer`: train or fine-tune one network (torch);
- :mod:`.qa_loss`: the optional QA-regressor loss on unlabeled cases (001) (torch);
- :mod:`.fit`: one checkpoint per ensemble member for a round.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "cases": ["LazyCase", "TrainingCase", "TrainingItem", "one_hot_organs"],
        "data": ["annotated_voxels_of", "lazy_training_cases", "load_training_case", "load_training_cases"],
        "early_stopping": ["EarlyStopping", "best_epoch", "running_best", "should_stop"],
        "fit": ["CheckpointSummary", "RoundTraining", "qa_loss_term", "train_member", "train_round"],
        "losses": ["SMOOTH_DR", "SMOOTH_NR", "masked_dice_bce_loss", "masked_soft_dice_per_organ", "voxel_weights"],
        "pool": ["CasePool", "REPLACE_FRACTION", "covering_step", "pool_window"],
        "qa_loss": ["QALossTerm", "STEPS_PER_REFRESH", "Unlabeled", "UnlabeledCase", "UnlabeledFile", "build_qa_loss", "montage_slice_indices", "qa_montage_tensor"],
        "round_start": ["OpenedRound", "open_round"],
        "sampling": ["Batch", "MAX_FOREGROUND_VOXELS", "PaddedCase", "Patch", "PatchSampler", "collate", "crop_start", "foreground_budget", "prepare_case", "sample_patch"],
        "trainer": ["EpochFinished", "EpochRecord", "ExtraLoss", "ProgressEvent", "TrainResult", "TrainingFinished", "TrainingStarted", "check_parent_matches", "resolve_amp", "split_cases", "train"],
        "training_set": ["TrainingSource", "fingerprint", "holdout_cases", "is_holdout", "manifest", "select_sources", "sources_from_manifest", "training_set_fingerprint"],
        "validation": ["case_dice", "mean_dice", "predict_logits", "validation_dice"],
    },
)
