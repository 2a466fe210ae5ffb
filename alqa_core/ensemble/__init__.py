"""Stage 2, ensemble: networks and their checkpoints, inference, external members, the pseudo label.

- :mod:`.networks`: registry spec -> MONAI network (torch);
- :mod:`.checkpoint`: checkpoints carrying config, organ table, spacing and lineage (torch);
- :mod:`.device`: the torch device a setting names, CPU threads (torch);
- :mod:`.inference`: sliding-window probabilities, MC dropout, batches of cases (torch);
- :mod:`.predict`: every member's soft prediction for a batch of cases (torch);
- :mod:`.external`: predictions dropped in by the user (TotalSegmentator, nnU-Net), through class maps;
- :mod:`.members`: a case's ensemble of a round on disk (``members.json``), read back;
- :mod:`.pseudo_labels`: the argmax of the ensemble mean, kept per round.

Only the modules marked torch import torch or MONAI; names load on first use.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "checkpoint": ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointMeta", "Lineage", "LoadedCheckpoint", "checkpoint_sha256", "load_checkpoint", "save_checkpoint", "utc_now_iso"],
        "device": ["resolve_device", "torch_threads"],
        "external": ["ExternalPrediction", "PROBABILITY_SLACK", "external_soft_prediction", "read_external_prediction"],
        "inference": ["McResult", "PreparedNetwork", "binary_entropy", "effective_roi", "mc_dropout_predict", "mc_member_name", "predict_batch", "predict_batch_from_checkpoints", "predict_probabilities", "prepare_network"],
        "members": ["MEMBERS_FILE", "MemberInfo", "load_ensemble", "load_preprocessed", "members_path", "organs_with_few_members", "write_members"],
        "networks": ["BUILDERS", "build_network", "has_dropout"],
        "predict": ["MIN_MEMBERS", "MemberFailure", "Predictions", "STAGE", "predict_cases", "predict_round"],
        "pseudo_labels": ["case_pseudo_label", "latest_pseudo_round", "pseudo_label", "read_case_pseudo_label", "write_case_pseudo_label"],
    },
)
