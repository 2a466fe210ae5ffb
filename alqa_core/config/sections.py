"""The core's own settings, one frozen dataclass per section of the campaign file.

``preprocess``, ``training``, ``inference``, ``attention``, ``qa`` and
``qa_loss`` are built field by field from these classes (a key is valid
exactly when the class has the field). They are plain data: reading a
campaign file imports neither torch nor MONAI. The stages that use them
re-export them (``alqa_core.training.TrainConfig`` is this ``TrainConfig``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from alqa_core.config.build import plain_data
from alqa_core.config.models import DIVISIBILITY
from alqa_core.errors import AlqaInputError
from alqa_core.workspace import validate_case_id

# ---------------------------------------------------------------- preprocess (ingest)


@dataclass(frozen=True)
class PreprocessConfig:
    """What :func:`alqa_core.ingest.preprocess_ct` does; ``spacing_mm`` is in output (R, A, S) axis order."""

    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    hu_min: float = -175.0
    hu_max: float = 275.0
    crop_to_body: bool = True
    body_hu_min: float = -500.0
    crop_margin_mm: float = 10.0
    pad_to_multiple: int = 16  # pad each axis to a multiple (networks need divisibility)

    def __post_init__(self):
        spacing = tuple(float(s) for s in self.spacing_mm)
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise AlqaInputError(None, f"preprocess spacing_mm must be 3 positive numbers, got {self.spacing_mm!r}")
        object.__setattr__(self, "spacing_mm", spacing)
        if not (math.isfinite(self.hu_min) and math.isfinite(self.hu_max) and self.hu_max > self.hu_min):
            raise AlqaInputError(None, f"preprocess needs hu_min < hu_max, got [{self.hu_min}, {self.hu_max}]")
        if not (math.isfinite(self.crop_margin_mm) and self.crop_margin_mm >= 0):
            raise AlqaInputError(None, f"preprocess crop_margin_mm must be >= 0, got {self.crop_margin_mm}")
        if int(self.pad_to_multiple) != self.pad_to_multiple or self.pad_to_multiple < 1:
            raise AlqaInputError(None, f"preprocess pad_to_multiple must be an int >= 1, not {self.pad_to_multiple}")


# ---------------------------------------------------------------- training

LR_FROM_SCRATCH = 1e-3
#: Transfer learning rate of 000_3a3cb93e44d13ddd.txt §2.2.2.
LR_FINE_TUNE = 1e-4
LR_SCHEDULES = ("constant", "poly")


@dataclass(frozen=True)
class TrainConfig:
    patch_size_vox: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 2
    max_epochs: int = 200
    iterations_per_epoch: int = 100
    #: None: 1e-3 from scratch, 1e-4 when fine-tuning from a parent
    lr: float | None = None
    weight_decay: float = 1e-5
    #: "constant" (the papers' fixed lr) or "poly" (nnU-Net: lr * (1 - epoch / max_epochs) ** 0.9)
    lr_schedule: str = "constant"
    #: share of cases held out for validation (ignored when val_case_ids is given)
    val_fraction: float = 0.2
    val_case_ids: tuple[str, ...] | None = None
    min_delta: float = 0.001
    patience: int = 10
    fg_prob: float = 0.67
    seed: int = 0
    #: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    #: "auto" = on for CUDA; AMP is CUDA only
    amp: bool | str = "auto"
    #: None = torch's default
    num_threads: int | None = None
    sw_batch_size: int = 2
    sw_overlap: float = 0.25
    #: at most this many prepared training cases in memory at a time (a pool sliding over the training set
    #: epoch by epoch); the QA-loss term holds as many unlabeled ones. A set no larger trains exactly as one list.
    cases_in_memory: int = 64

    def __post_init__(self):
        object.__setattr__(self, "patch_size_vox", tuple(int(p) for p in self.patch_size_vox))
        if self.val_case_ids is not None:
            object.__setattr__(self, "val_case_ids", tuple(str(c) for c in self.val_case_ids))
        if len(self.patch_size_vox) != 3 or min(self.patch_size_vox) < 1:
            raise ValueError(f"patch_size_vox must be 3 positive integers, got {self.patch_size_vox}")
        for name in ("batch_size", "max_epochs", "iterations_per_epoch", "patience", "sw_batch_size", "cases_in_memory"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.fg_prob <= 1.0:
            raise ValueError(f"fg_prob must be in [0, 1], got {self.fg_prob}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.amp not in (True, False, "auto"):
            raise ValueError(f"amp must be true, false or 'auto', got {self.amp!r}")

    def resolved_lr(self, fine_tune: bool) -> float:
        if self.lr is not None:
            return float(self.lr)
        return LR_FINE_TUNE if fine_tune else LR_FROM_SCRATCH

    def to_dict(self) -> dict:
        return plain_data(dataclasses.asdict(self))


# ---------------------------------------------------------------- inference (ensemble)

BLEND_MODES = ("constant", "gaussian")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class InferenceConfig:
    """How to run sliding-window inference.

    ``roi_size_vox`` is the window (voxels, on the preprocessed grid); it is
    clamped per axis to the volume size rounded up to ``roi_divisible_by``.
    ``mc_samples`` > 0 makes :func:`predict_batch` return MC-dropout means.
    ``amp``: "auto" = bf16/fp16 autocast on CUDA, off on CPU; "off", "bf16",
    "fp16" force it. ``channels_last``: "auto" = on for CPU, off for CUDA.
    """

    roi_size_vox: tuple[int, int, int] = (96, 96, 96)
    sw_batch_size: int = 4
    overlap: float = 0.25
    blend_mode: str = "gaussian"
    sigma_scale: float = 0.125
    mc_samples: int = 0
    mc_seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    roi_divisible_by: int = max(DIVISIBILITY.values())

    def __post_init__(self):
        roi = self.roi_size_vox
        roi = (roi,) * 3 if isinstance(roi, int) else tuple(int(r) for r in roi)
        object.__setattr__(self, "roi_size_vox", roi)
        if len(roi) != 3 or min(roi) < 1:
            raise ValueError(f"roi_size_vox must be 3 positive ints, got {self.roi_size_vox}")
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.blend_mode not in BLEND_MODES:
            raise ValueError(f"blend_mode must be one of {BLEND_MODES}, got {self.blend_mode!r}")
        if self.mc_samples < 0:
            raise ValueError(f"mc_samples must be >= 0 (0 = off), got {self.mc_samples}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.channels_last not in ("auto", "on", "off"):
            raise ValueError(f"channels_last must be 'auto', 'on' or 'off', got {self.channels_last!r}")
        if self.roi_divisible_by < 1:
            raise ValueError(f"roi_divisible_by must be >= 1, got {self.roi_divisible_by}")


# ---------------------------------------------------------------- attention

ENTROPY_KINDS = ("binary", "entr")


@dataclass(frozen=True)
class AttentionConfig:
    """How attention maps are made. Defaults follow the public AbdomenAtlas code.

    - ``inconsistency_threshold``: Eq. 1 (std across members, population std)
      is binarised by ``std > threshold``.
    - ``uncertainty_threshold``: Eq. 2 (mean entropy across members, nats) is
      binarised by ``mean > threshold``.
    - ``entropy``: ``"binary"`` (default) or ``"entr"`` (``-p ln p``, the public code).
    - ``cleaning_radius_mm``: radius of the ellipsoid opening each binarised
      component (0 = no opening). ``cleaning_restore`` adds back the mask's
      voxels within that radius of what survived the opening, so a blob keeps
      its volume at any spacing. ``min_component_ml`` then drops connected
      components (26-connected) smaller than this. See ``cleaning``.
    - ``clean_overlap``: also clean Eq. 3's overlap (the public code does not).
    - ``score_annotated``: give attention to organs the case's own dataset
      annotates (the public code does not: the original label wins anyway).
    - ``min_organ_ml``: floor of the organ volume that ``relative`` divides
      by, so an organ the ensemble hardly predicts does not divide by ~0.
    """

    inconsistency_threshold: float = 0.1
    uncertainty_threshold: float = 0.05
    entropy: str = "binary"
    cleaning_radius_mm: float = 3.0
    cleaning_restore: bool = True
    min_component_ml: float = 0.0
    clean_overlap: bool = False
    score_annotated: bool = False
    min_organ_ml: float = 10.0

    def __post_init__(self):
        for name in ("inconsistency_threshold", "uncertainty_threshold", "cleaning_radius_mm", "min_component_ml", "min_organ_ml"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.entropy not in ENTROPY_KINDS:
            raise ValueError(f"entropy must be one of {ENTROPY_KINDS}, got {self.entropy!r}")
        if self.min_organ_ml <= 0:
            raise ValueError(f"min_organ_ml must be > 0 (it is a divisor floor), got {self.min_organ_ml!r}")


# ---------------------------------------------------------------- qa

MONTAGE_PX = 1344
REGRESSOR_PX = 256


@dataclass(frozen=True)
class QARegressorConfig:
    epochs: int = 200
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 16
    val_fraction: float = 0.2
    #: explicit validation cases; empty: a seeded ``val_fraction`` of the cases
    val_case_ids: tuple[str, ...] = ()
    seed: int = 0
    #: "cpu" (default, deterministic), "auto" (CUDA when available), "cuda", "cuda:1", ...
    device: str = "cpu"
    #: torch CPU threads while training (restored after); None: leave torch's setting
    num_threads: int | None = None
    input_px: int = 256
    widen_factor: float = 1.0
    conv1_stride: int = 2
    #: keep the weights of the epoch with the lowest validation MSE (001: "epoch 198")
    keep_best: bool = True

    def __post_init__(self):
        object.__setattr__(self, "val_case_ids", tuple(self.val_case_ids))
        for name in ("epochs", "batch_size", "input_px", "conv1_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AlqaInputError(None, f"QA regressor {name} must be an integer >= 1, got {value!r}")
        if self.num_threads is not None and (isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise AlqaInputError(None, f"QA regressor num_threads must be None or an integer >= 1, got {self.num_threads!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise AlqaInputError(None, f"QA regressor lr must be > 0, got {self.lr}")
        if not 0 < self.val_fraction < 1:
            raise AlqaInputError(None, f"QA regressor val_fraction must be in (0, 1), got {self.val_fraction}")
        if not (math.isfinite(self.widen_factor) and self.widen_factor > 0):
            raise AlqaInputError(None, f"QA regressor widen_factor must be > 0, got {self.widen_factor}")

    def to_dict(self) -> dict:
        return plain_data(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "QARegressorConfig":
        return cls(**{**dict(d), "val_case_ids": tuple(d.get("val_case_ids", ()))})


# ---------------------------------------------------------------- qa_loss (training)

PENALTIES = ("mse", "grade")


@dataclass(frozen=True)
class QALossConfig:
    #: weight of the QA term; 0 turns the mode off (training is then exactly the supervised run)
    weight: float = 0.0
    #: a QA regressor checkpoint (:func:`alqa_core.qa.save_qa_regressor`) or a network taking
    #: (B, 3, montage_px, montage_px) in [0, 1]; it is copied and frozen, never trained
    regressor: Path | None = None  # or, from code, the network itself
    #: which of the given unlabeled cases to use; empty: all of them
    case_ids: tuple[str, ...] = ()
    #: unlabeled cases drawn per training step
    cases_per_step: int = 1
    #: add the term on every n-th step only (steps n-1, 2n-1, ...; cost control); 1: every step
    every_n_steps: int = 1
    #: None: every axial slice (as :func:`alqa_core.qa.qa_montage`); N: N evenly spaced slices
    montage_slices: int | None = None
    #: montage edge fed to the regressor; None: the checkpoint's ``input_px`` (256 for a bare network)
    montage_px: int | None = None
    #: intermediate montage size (as ``downsample(qa_montage(..., 1344))``); None resizes once
    via_px: int | None = MONTAGE_PX
    #: "mse": weight * g**2 (001's MSEL, target 0 = success); "grade": weight * relu(g)
    penalty: str = "mse"
    #: volumes are zero-padded to a multiple of this before the forward (32 suits every registry arch)
    pad_to_multiple: int = 32
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "case_ids", tuple(str(c) for c in self.case_ids))
        if isinstance(self.regressor, (str, os.PathLike)):
            object.__setattr__(self, "regressor", Path(self.regressor))
        elif self.regressor is not None and not callable(self.regressor):
            raise AlqaInputError(None, f"qa_loss regressor must be a checkpoint path or a network, got {self.regressor!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight < 0:
            raise AlqaInputError(None, f"qa_loss weight must be a number >= 0, got {self.weight!r}")
        for name in ("cases_per_step", "every_n_steps", "pad_to_multiple"):
            _check_positive_int(name, getattr(self, name))
        for name in ("montage_slices", "montage_px", "via_px"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        if self.penalty not in PENALTIES:
            raise AlqaInputError(None, f"qa_loss penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if self.weight > 0 and self.regressor is None:
            raise AlqaInputError(None, "qa_loss weight > 0 needs a regressor (checkpoint path or network)")
        for c in self.case_ids:
            validate_case_id(c)

    @property
    def enabled(self) -> bool:
        return self.weight > 0


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AlqaInputError(None, f"qa_loss {name} must be an integer >= 1, got {value!r}")

