"""Stage 3, attention: maps of where the ensemble is probably wrong (003 §3.1, Eq. 1-4) and their size.

- :mod:`.constants`: the entropy table and integer levels derived from :class:`alqa_core.config.AttentionConfig`;
- :mod:`.kernel`: Eq. 1-3 on the stored uint8 values, touching only voxels that can carry attention;
  :mod:`.kernel_jit` (+ :mod:`.kernel_jit_band`) compiles it with numba (the default), :mod:`.kernel_torch`
  runs it with torch (GPU); :mod:`.organ_stats` holds what every backend returns for one organ;
- :mod:`.cleaning`: erosion then dilation, defined in millimetres;
- :mod:`.size`: attention size per case, organ and axial slice;
- :mod:`.compute`: :func:`compute_attention` and :func:`attention_from_predictions`;
- :mod:`.case`: the attention of a round's cases in the workspace and the catalog, and previews.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "case": ["attention_for_cases", "attention_preview", "case_attention"],
        "cleaning": ["CONNECTIVITY_26", "clean_mask", "clean_voxels", "ellipsoid_structure", "is_noop", "voxel_cube_structure"],
        "compute": ["AttentionResult", "attention_from_predictions", "compute_attention"],
        "constants": ["HIGH_U8", "QuietLevels", "entropy_lut", "quiet_levels", "std_threshold_int"],
        "kernel": ["AUTO_NUMBA_MIN_BYTES", "BACKENDS", "CHUNK_WORDS", "DENSE_FRACTION", "OVERLAP_SLICE_VOXELS", "organ_statistics", "resolve_backend"],
        "kernel_jit": ["BAND_WORDS", "JIT_CHUNK_WORDS", "active_words", "entropy_tables", "organ_statistics_jit", "split_by_organ"],
        "kernel_jit_band": ["band_stats"],
        "kernel_torch": ["attention_device", "organ_statistics_torch"],
        "organ_stats": ["OrganStats"],
        "size": ["AttentionRecords", "AttentionSize", "OrganAttentionSize", "organ_size", "unscored_size"],
    },
)
