"""Campaign simulators: compare selection strategies where the ground truth is known, before radiologist hours are spent.

Two simulators over the platform's own round steps:

- :mod:`.steps`: the platform's round as the simulators call it (attention, priority list,
  queue, answers, reassembly), so what they measure is the platform's own selection;
- :mod:`.oracle`: the oracle annotator (ground-truth answers, QA grades from Dice, hard-case share);
- :mod:`.output`: the output folder a simulator claims as its own;
- :mod:`.trained`: trained-model campaigns on phantoms (ingest, M_0, rounds of
  predict/select/answer/fine-tune/score; ``alqa simulate``);
- :mod:`.error_model`: error-model members made from the ground truth with controlled
  errors, at scale and without training (``alqa simulate --members error-model``).
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submodules=["error_model", "trained"],
    submod_attrs={
        "oracle": ["FAILURE_DICE", "USABLE_DICE", "answer_slices", "answer_volume", "grade_from_dice", "ground_truth_path", "hard_case_share", "oracle_grade", "present_organs", "read_manifest", "worst_organ_grade"],
        "output": ["OWNER_MARKER", "claim_output"],
        "steps": ["ORACLE_EPOCH", "VOLUME_QUEUES", "attention", "oracle_revision", "priority", "reassembled", "slice_selection", "volume_queue"],
    },
)
