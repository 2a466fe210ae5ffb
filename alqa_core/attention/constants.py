"""The attention settings (003 §3.1 and the public AbdomenAtlas code) and their derived constants.

Every choice the public code makes is a field here, with its value as the
default, except the cleaning, which the public code defines in voxels and
alqa defines in millimetres (see :mod:`alqa_core.attention.cleaning`).

Entropy (Eq. 2). Heads are per-organ sigmoids, so each channel is a
Bernoulli variable and its entropy is the binary entropy
``H(p) = -p ln p - (1-p) ln(1-p)``, in **nats** (natural log), **not
normalised** (its maximum is ln 2 ~ 0.693 at p = 0.5). The public code's
uncertainty is ``torch.special.entr(p) = -p ln p``, also in nats and not
normalised, so the default threshold 0.05 keeps its scale: both measures
agree to within 0.003 nats for p < 0.05, i.e. where the 0.05 threshold
bites on the background side of an organ. They differ on the organ side:
``-p ln p`` falls to 0.05 already at p ~ 0.95 and misses confident-but-not-
certain voxels inside an organ, which the binary entropy flags down to
p ~ 0.99. ``entropy="entr"`` reproduces the public code (Eq. 2 as printed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import entr

from alqa_core.config.sections import ENTROPY_KINDS, AttentionConfig

#: p > 0.5 on the stored scale: round(p * 255) >= 128 (127/255 < 0.5 < 128/255).
HIGH_U8 = 128


@lru_cache(maxsize=None)
def _entropy_lut_cached(kind: str) -> np.ndarray:
    p = np.arange(256, dtype=np.float64) / 255.0
    lut = entr(p) if kind == "entr" else entr(p) + entr(1.0 - p)
    lut.flags.writeable = False
    return lut


def entropy_lut(kind: str = "binary") -> np.ndarray:
    """Entropy (nats) of each stored uint8 value ``q`` at ``p = q / 255``: float64 (256,)."""
    if kind not in ENTROPY_KINDS:
        raise ValueError(f"entropy must be one of {ENTROPY_KINDS}, got {kind!r}")
    return _entropy_lut_cached(kind)


def std_threshold_int(threshold: float, members: int) -> int:
    """Eq. 1 binarised exactly on the stored integers.

    With ``s1 = sum q`` and ``s2 = sum q^2`` over ``members`` values,
    ``std(q / 255) = sqrt(members * s2 - s1^2) / (members * 255)``, so
    ``std > t`` iff ``members * s2 - s1^2 > (t * members * 255)^2`` iff (the
    left side is an integer) ``members * s2 - s1^2 > floor(that)``.
    """
    return int(math.floor((threshold * members * 255.0) ** 2))


@dataclass(frozen=True)
class QuietLevels:
    """Stored values that can never produce attention, whatever the other members say.

    ``low``: if every member's value is <= ``low`` (2^b - 1, at least 0 as
    thresholds are >= 0), Eq. 1-3 all stay off and the organ is absent.
    ``high``: if every member's value is >= ``high`` (>= 128; 256 for none),
    Eq. 1-2 stay off and the organ is present (Eq. 3 may still fire).
    """

    low: int
    high: int

    @property
    def low_word_mask(self) -> np.uint64:
        """uint64 with byte ``~low`` in every lane: ``word & mask == 0`` iff all 8 bytes <= low."""
        byte = (~self.low) & 0xFF
        return np.uint64(int.from_bytes(bytes([byte] * 8), "little"))


@lru_cache(maxsize=64)
def quiet_levels(config: AttentionConfig) -> QuietLevels:
    lut = entropy_lut(config.entropy)
    low = 0  # all members 0: std 0, entropy 0, and thresholds are >= 0
    for bits in range(1, 8):  # candidates 0, 1, 3, ..., 127
        t = (1 << bits) - 1
        if lut[: t + 1].max() <= config.uncertainty_threshold and t / 510.0 <= config.inconsistency_threshold:
            low = t
        else:
            break
    high = 256
    for v in range(255, HIGH_U8 - 1, -1):
        if lut[v:].max() <= config.uncertainty_threshold and (255 - v) / 510.0 <= config.inconsistency_threshold:
            high = v
        else:
            break
    return QuietLevels(low=low, high=high)
