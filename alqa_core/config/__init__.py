"""The campaign config and the core's own settings, as frozen dataclasses read from one YAML file.

- :mod:`.campaign`: :class:`CampaignConfig` and :func:`load_campaign` (datasets, members, budget, submissions, evaluation);
- :mod:`.sections`: the core's sections (preprocess, training, inference, attention, qa, qa_loss);
- :mod:`.models`: the model registry as data (architectures, sizes, presets, divisibility);
- :mod:`.build`: YAML mapping -> frozen dataclass, field by field, and back to plain data;
- :mod:`.template`: the commented template ``alqa init`` writes.

Nothing here imports torch or MONAI.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "build": ["build_dataclass", "plain_data"],
        "campaign": ["ArchitectureConfig", "BatchConfig", "BudgetConfig", "CampaignConfig", "DatasetSource", "EvaluationConfig", "ExternalMemberConfig", "ORGAN_ENTRY_KEYS", "QUEUE_STRATEGIES", "RoundsConfig", "SubmissionConfig", "TrainedMember", "load_campaign", "parse_campaign"],
        "models": ["ARCHITECTURES", "DIVISIBILITY", "ModelSpec", "PRESETS", "SIZES", "architectures"],
        "sections": ["AMP_MODES", "AttentionConfig", "BLEND_MODES", "ENTROPY_KINDS", "InferenceConfig", "LR_FINE_TUNE", "LR_FROM_SCRATCH", "LR_SCHEDULES", "MONTAGE_PX", "PENALTIES", "PreprocessConfig", "QALossConfig", "QARegressorConfig", "REGRESSOR_PX", "TrainConfig"],
        "template": ["TEMPLATE", "render_template", "write_template"],
    },
)
