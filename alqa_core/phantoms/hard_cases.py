"""Hard cases as data: each kind is a row of modifiers the generator applies.

Kinds and what they do:

- ``splenomegaly``: spleen scaled ~1.5x per axis (volume ~3.5x), growing down and forward.
- ``pancreatic_tail_mass``: a hypo-attenuating round mass (18-24 mm radius) in the pancreatic
  tail. **It is labelled pancreas**: AbdomenAtlas annotates a tumour-enlarged pancreas as
  pancreas, so the ground truth outlines the enlarged organ, mass included.
- ``gastric_gas``: the stomach distended (~1.45x volume) and its lumen entirely gas (mean HU far below -500).
- ``nephrectomy``: one kidney (side drawn from the seed) is absent; its label value does not occur.
- ``cholecystectomy``: the gallbladder is absent.
- ``low_contrast``: failed bolus / low-dose scan: soft-tissue HU compressed towards 40 HU
  (factor 0.3) and noise x1.8, so organ/background contrast is strongly reduced.
- ``metal_streak``: bilateral pedicle screws (3500 HU) in a lumbar vertebra with bright and
  dark streaks radiating from them across the abdomen.
- ``truncated_fov``: a wide (obese) patient, body cut at the left and right FOV edges.
- ``situs_inversus``: the anatomy mirrored left/right (liver on the left, spleen on the right,
  aorta right of the IVC). Labels keep anatomical names: the liver is still ``liver``. Kidneys
  are named by the side they lie on (as radiologists and TotalSegmentator do), so
  ``kidney_right`` is still the kidney on the patient's right.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class HardKind:
    """Modifiers of a normal phantom. Defaults change nothing."""

    name: str
    description: str
    #: organ -> per-axis (lat, ap, sup) scale, applied on top of the patient's jitter
    organ_scale: tuple[tuple[str, tuple[float, float, float]], ...] = ()
    #: organ -> shift (mm) of the organ, applied with the scale
    organ_shift_mm: tuple[tuple[str, tuple[float, float, float]], ...] = ()
    #: one organ drawn from these is left out (empty: none)
    remove_one_of: tuple[str, ...] = ()
    #: mirror the anatomy left/right, then swap these label pairs back (names by side)
    mirror_lr: bool = False
    swap_after_mirror: tuple[tuple[str, str], ...] = ()
    #: fraction of the stomach lumen that is gas (None: the patient's own draw)
    stomach_gas_fraction: float | None = None
    #: soft-tissue HU become ``pivot + scale * (hu - pivot)``
    contrast_scale: float = 1.0
    contrast_pivot_hu: float = 40.0
    noise_scale: float = 1.0
    #: round mass: (organ it belongs to, index of the lobe it sits on, tissue, radius range mm)
    mass: tuple[str, int, str, tuple[float, float]] | None = None
    metal_implant: bool = False
    #: extra subcutaneous fat on the left and right flanks (mm)
    extra_lateral_fat_mm: float = 0.0


_KINDS = (
    HardKind(
        "splenomegaly",
        "enlarged spleen (~3.5x volume)",
        organ_scale=(("spleen", (1.45, 1.5, 1.6)),),
        organ_shift_mm=(("spleen", (-2.0, 14.0, -22.0)),),
    ),
    HardKind(
        "pancreatic_tail_mass",
        "hypo-attenuating mass in the pancreatic tail, labelled pancreas",
        mass=("pancreas", 2, "pancreatic_mass", (18.0, 24.0)),
    ),
    HardKind(
        "gastric_gas",
        "stomach distended and full of gas",
        organ_scale=(("stomach", (1.15, 1.15, 1.1)),),
        stomach_gas_fraction=1.0,
    ),
    HardKind("nephrectomy", "one kidney removed", remove_one_of=("kidney_right", "kidney_left")),
    HardKind("cholecystectomy", "gallbladder removed", remove_one_of=("gallbladder",)),
    HardKind("low_contrast", "poor contrast phase, low dose", contrast_scale=0.3, noise_scale=1.8),
    HardKind("metal_streak", "pedicle screws with streak artefacts", metal_implant=True),
    HardKind("truncated_fov", "body cut at the field-of-view edge", extra_lateral_fat_mm=70.0),
    HardKind(
        "situs_inversus",
        "left/right mirrored anatomy",
        mirror_lr=True,
        swap_after_mirror=(("kidney_right", "kidney_left"),),
    ),
)

#: Hard kinds by name.
HARD_KINDS: Mapping[str, HardKind] = MappingProxyType({k.name: k for k in _KINDS})

#: The normal case (no modifier).
NO_HARD_KIND = HardKind("", "normal anatomy")

#: Tissues that ``contrast_scale`` does not touch (air, gas, bone, hardware).
CONTRAST_EXEMPT_TISSUES: tuple[str, ...] = (
    "air",
    "gas",
    "bone_cortical",
    "bone_cancellous",
    "metal",
    "couch",
)


@dataclass(frozen=True)
class MetalPlan:
    """Pedicle screws and their streaks (anatomical frame, mm)."""

    screw_lat_mm: float = 13.0
    screw_ap_mm: float = -62.0
    screw_semi_mm: tuple[float, float, float] = (3.0, 21.0, 3.0)
    screw_yaw_deg: float = 14.0
    sup_range_mm: tuple[float, float] = (-40.0, 20.0)
    n_streaks: int = 10
    streak_amplitude_hu: tuple[float, float] = (500.0, 1100.0)
    streak_width_mm: float = 2.5
    streak_decay_mm: float = 140.0
    dark_band_hu: float = -900.0
    slab_half_mm: float = 12.0


METAL_PLAN = MetalPlan()


def hard_kind(name: str | None) -> HardKind:
    """The table row for ``name`` (``None`` or ``""``: the normal case)."""
    if not name:
        return NO_HARD_KIND
    return HARD_KINDS[name]


__all__ = ["CONTRAST_EXEMPT_TISSUES", "HARD_KINDS", "HardKind", "METAL_PLAN", "MetalPlan", "NO_HARD_KIND", "hard_kind"]
