"""Attention maps (003 §3.1, Eq. 1-4) and attention size.

- :mod:`.config`: :class:`AttentionConfig` (thresholds, entropy, cleaning).
- :mod:`.kernel`: Eq. 1-3 on the stored uint8 values, touching only voxels
  that can carry attention.
- :mod:`.cleaning`: erosion then dilation, defined in millimetres.
- :mod:`.size`: attention size per case, organ and axial slice.
- :mod:`.compute`: :func:`compute_attention` and
  :func:`attention_from_predictions`, returning an :class:`AttentionResult`.
"""

from alqa_core.attention.cleaning import clean_mask, clean_voxels, ellipsoid_structure, voxel_cube_structure
from alqa_core.attention.compute import AttentionResult, attention_from_predictions, compute_attention
from alqa_core.attention.config import AttentionConfig, entropy_lut
from alqa_core.attention.size import AttentionRecords, AttentionSize, OrganAttentionSize

__all__ = [
    "AttentionConfig",
    "AttentionRecords",
    "AttentionResult",
    "AttentionSize",
    "OrganAttentionSize",
    "attention_from_predictions",
    "clean_mask",
    "clean_voxels",
    "compute_attention",
    "ellipsoid_structure",
    "entropy_lut",
    "voxel_cube_structure",
]
