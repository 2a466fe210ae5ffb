"""The QA loss: a frozen QA regressor scores the network's own predictions on unlabeled cases.

001_e60473b22d13ca03.txt §2.3-2.4: labeled cases train through the Dice loss;
unlabeled cases go through the same network, their predictions are overlaid on
the CT as a 2D montage, a frozen ResNet-18 trained on human 0/1/2 grades
predicts the grade, and that score is backpropagated "from the frozen
pre-trained network" into the segmentation network (MSE to the grade of
success, their MSEL). Here:

- :class:`QALossConfig` says how strongly (``weight``; 0 = off), with which
  regressor (a checkpoint of :func:`alqa_core.qa.save_qa_regressor` or a
  network), on which unlabeled cases and with which montage;
- :func:`build_qa_loss` returns a :class:`QALossTerm` (or None when off), the
  :class:`~alqa_core.training.trainer.ExtraLoss` that ``train(..., extra_loss=)``
  adds to the masked Dice + BCE at every step;
- per step, ``cases_per_step`` unlabeled cases are drawn from a generator
  seeded by ``(seed, step)`` (no hidden RNG state, nothing drawn from the
  patch sampler's or torch's streams) among those of a bounded pool: at most
  ``cases_in_memory`` of them, a :class:`~alqa_core.training.pool.CasePool`
  window over all the unlabeled cases that slides every ``steps_per_refresh``
  steps (fast enough to pass over them all in ``refreshes`` slides, if given). Cases may be :class:`UnlabeledFile` s, read when first drawn while
  in the window and released when it moves on. With every case in the pool
  (the default) the draws are those over the whole list. Each drawn case goes WHOLE through the network
  (padded to ``pad_to_multiple`` with 0 = air, the logits cropped back), its
  sigmoid probabilities and CT become a differentiable montage
  (:func:`alqa_core.qa.montage_tensor`), and the regressor's grade ``g`` gives
  ``weight * mean(g**2)`` (``penalty="mse"``, 001's MSEL with target 0) or
  ``weight * mean(relu(g))`` (``penalty="grade"``: the grade itself, lower is
  better, floored at 0 so the network gains nothing by pushing the regressor
  below "success");
- the regressor is a private frozen copy: eval mode (BatchNorm uses its running
  statistics and never updates them), ``requires_grad`` False on every
  parameter, never in the optimizer. Gradients flow through it to the montage
  and on to the segmentation network only.

Whole volumes are what the regressor was trained on (a montage of every axial
slice), so there is no patch mode: the QA term costs one full-volume forward
and backward per drawn case, which is meant for coarse grids (the paper used
168x168x64; the demo's 5 mm phantoms are ~80x64x48). ``montage_slices`` picks
evenly spaced axial slices when the regressor was trained on such montages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from alqa_core.config.sections import MONTAGE_PX, REGRESSOR_PX, QALossConfig
from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import read_nifti_array
from alqa_core.organs import OrganTable
from alqa_core.qa.montage import montage_tensor
from alqa_core.qa.regressor import GRADE_MIN, freeze_regressor, load_qa_regressor, qa_loss
from alqa_core.training.pool import CasePool
from alqa_core.workspace import validate_case_id

#: steps between two slides of the unlabeled pool when the caller does not say (TrainConfig's iterations_per_epoch)
STEPS_PER_REFRESH = 100


@dataclass(frozen=True, eq=False)
class UnlabeledCase:
    """A preprocessed case without labels: float32 ``(i, j, k)`` RAS in [0, 1]."""

    case_id: str
    image: np.ndarray

    def __post_init__(self):
        validate_case_id(self.case_id)
        image = np.asarray(self.image)
        if image.ndim != 3 or image.dtype != np.float32 or min(image.shape) < 1:
            raise AlqaInputError(f"case {self.case_id}", f"unlabeled image must be a non-empty float32 (i, j, k) array, got {image.dtype} {image.shape}")
        view = image.view()
        view.flags.writeable = False
        object.__setattr__(self, "image", view)

    def load(self) -> UnlabeledCase:
        """The case itself (in memory already), like :meth:`UnlabeledFile.load`."""
        return self


@dataclass(frozen=True, eq=False)
class UnlabeledFile:
    """An unlabeled case on disk (its preprocessed volume): read when :meth:`load` is called, never kept."""

    case_id: str
    path: Path

    def __post_init__(self):
        validate_case_id(self.case_id)
        object.__setattr__(self, "path", Path(self.path))

    def load(self) -> UnlabeledCase:
        return UnlabeledCase(self.case_id, np.asarray(read_nifti_array(self.path)[0], dtype=np.float32))

    @property
    def image(self) -> np.ndarray:
        """The volume, read now (each access reads the file again)."""
        return self.load().image


Unlabeled = Union[UnlabeledCase, UnlabeledFile]


def montage_slice_indices(n_slices: int, montage_slices: int | None) -> np.ndarray:
    """Axial slices a montage shows: all, or ``montage_slices`` evenly spaced ones (first and last included)."""
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    if montage_slices is None or montage_slices >= n_slices:
        return np.arange(n_slices)
    return np.unique(np.rint(np.linspace(0, n_slices - 1, int(montage_slices))).astype(np.int64))


def qa_montage_tensor(
    ct01: torch.Tensor,
    probabilities: torch.Tensor,
    table: OrganTable,
    size_px: int,
    montage_slices: int | None = None,
    via_px: int | None = MONTAGE_PX,
) -> torch.Tensor:
    """Differentiable ``(3, size_px, size_px)`` montage of ``montage_slices`` evenly spaced axial slices.

    The same picture the QA term feeds the regressor; build the regressor's
    training montages with it (from one-hot or soft probabilities) so both sides see one layout.
    """
    keep = torch.as_tensor(montage_slice_indices(int(ct01.shape[-1]), montage_slices), device=ct01.device)
    return montage_tensor(ct01.index_select(-1, keep), probabilities.index_select(-1, keep), table, size_px, via_px=via_px)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Zero-pad the last three axes of ``x`` up to ``multiple``; return it and the original extent."""
    shape = tuple(int(s) for s in x.shape[-3:])
    pads: list[int] = []
    for s in reversed(shape):  # F.pad lists the last axis first
        pads += [0, (-s) % multiple]
    return (F.pad(x, pads) if any(pads) else x), shape


@dataclass(frozen=True, eq=False)
class QALossTerm:
    """The QA term for ``train(..., extra_loss=term)``; built by :func:`build_qa_loss`."""

    config: QALossConfig
    cases: tuple[Unlabeled, ...]
    table: OrganTable
    regressor: torch.nn.Module  # frozen: eval mode, requires_grad False
    montage_px: int
    regressor_source: str
    #: at most this many unlabeled cases loaded at a time (None: all of them)
    cases_in_memory: int | None = None
    #: the pool slides every this many steps
    steps_per_refresh: int = STEPS_PER_REFRESH
    #: slides in a run (e.g. its epochs), so the pool passes over every case within them; None: a quarter per slide
    refreshes: int | None = None

    def __post_init__(self):
        if not self.cases:
            raise AlqaInputError(None, "qa_loss: no unlabeled case to score")
        if self.cases_in_memory is not None and self.cases_in_memory < 1:
            raise ValueError(f"cases_in_memory must be >= 1, got {self.cases_in_memory}")
        if self.steps_per_refresh < 1:
            raise ValueError(f"steps_per_refresh must be >= 1, got {self.steps_per_refresh}")
        capacity = self.cases_in_memory or len(self.cases)
        # the loaded cases: mutable state of an otherwise frozen term, never part of what it computes
        object.__setattr__(self, "_pool", CasePool(len(self.cases), capacity, self.config.seed, lambda i: self.cases[i].load(), self.refreshes))

    def cases_for_step(self, step: int) -> tuple[UnlabeledCase, ...]:
        """The cases drawn at ``step``, loaded (empty on skipped steps); a pure function of (seed, step) and the pool size."""
        if (int(step) + 1) % self.config.every_n_steps:  # steps n-1, 2n-1, ...: "every n-th step"
            return ()
        refresh = int(step) // self.steps_per_refresh
        window = self._pool.window(refresh)
        rng = np.random.default_rng((self.config.seed, int(step)))
        n = min(self.config.cases_per_step, len(window))
        return tuple(self._pool.get(refresh, int(j)) for j in sorted(rng.choice(len(window), size=n, replace=False)))

    def loaded_count(self) -> int:
        """How many unlabeled cases the term holds in memory now (at most ``cases_in_memory``)."""
        return self._pool.loaded_count()

    def montages(self, network: torch.nn.Module, cases: Sequence[UnlabeledCase]) -> torch.Tensor:
        """``(B, 3, montage_px, montage_px)`` montages of ``network``'s sigmoid outputs on ``cases`` (differentiable)."""
        device = next(network.parameters()).device
        out = []
        for case in cases:
            image = torch.tensor(case.image, device=device)  # a copy: the case's array is read-only
            padded, (ni, nj, nk) = _pad_to_multiple(image[None, None], self.config.pad_to_multiple)
            logits = network(padded)[0, :, :ni, :nj, :nk]
            if logits.shape[0] != len(self.table):
                raise AlqaInputError(None, f"qa_loss: the network has {logits.shape[0]} outputs but the organ table {len(self.table)} organs")
            probs = torch.sigmoid(logits.float())
            out.append(qa_montage_tensor(image, probs, self.table, self.montage_px, self.config.montage_slices, self.config.via_px))
        return torch.stack(out)

    def grades(self, montages: torch.Tensor) -> torch.Tensor:
        """The frozen regressor's raw grades ``(B,)`` (not clipped, so the gradient survives)."""
        self._check_frozen()
        return self.regressor(montages.to(next(self.regressor.parameters()).device)).reshape(-1)

    def __call__(self, network: torch.nn.Module, step: int) -> torch.Tensor:
        device = next(network.parameters()).device
        cases = () if self.config.weight == 0 else self.cases_for_step(step)
        if not cases:  # nothing runs: the step's gradients are exactly the supervised ones
            return torch.zeros((), device=device)
        self.regressor.to(device)  # no-op after the first step; the frozen copy is ours
        montages = self.montages(network, cases).float()
        self._check_frozen()
        if self.config.penalty == "mse":
            penalty = qa_loss(self.regressor, montages, GRADE_MIN)
        else:
            penalty = torch.relu(self.regressor(montages).reshape(-1) - GRADE_MIN).mean()
        return float(self.config.weight) * penalty.float()

    def _check_frozen(self) -> None:
        if self.regressor.training or any(p.requires_grad for p in self.regressor.parameters()):
            raise RuntimeError("the QA regressor must stay frozen (eval mode, no trainable parameters)")

    def describe(self) -> Mapping[str, Any]:
        c = self.config
        return {
            "kind": "qa_loss",
            "weight": float(c.weight),
            "regressor": self.regressor_source,
            "case_ids": [u.case_id for u in self.cases],
            "cases_per_step": c.cases_per_step,
            "cases_in_memory": self.cases_in_memory,
            "every_n_steps": c.every_n_steps,
            "montage_slices": c.montage_slices,
            "montage_px": self.montage_px,
            "via_px": c.via_px,
            "penalty": c.penalty,
            "seed": c.seed,
        }


def _frozen_regressor(config: QALossConfig) -> tuple[torch.nn.Module, int, str]:
    """(frozen copy, montage edge, where it came from)."""
    if isinstance(config.regressor, torch.nn.Module):
        return freeze_regressor(config.regressor), config.montage_px or REGRESSOR_PX, "<network>"
    path = Path(config.regressor)
    loaded = load_qa_regressor(path)  # AlqaInputError naming the file if it does not load
    if config.montage_px is not None and config.montage_px != loaded.config.input_px:
        raise AlqaInputError(path, f"QA regressor was trained on {loaded.config.input_px} px montages, qa_loss montage_px is {config.montage_px}")
    return freeze_regressor(loaded.network), loaded.config.input_px, str(path)


def build_qa_loss(
    config: QALossConfig,
    unlabeled: Sequence[Unlabeled],
    table: OrganTable,
    cases_in_memory: int | None = None,
    steps_per_refresh: int = STEPS_PER_REFRESH,
    refreshes: int | None = None,
) -> QALossTerm | None:
    """The QA term over ``unlabeled`` (narrowed to ``config.case_ids``), or None when the mode is off.

    ``unlabeled``: cases in memory or :class:`UnlabeledFile` s, of which at
    most ``cases_in_memory`` (None: all) are loaded at a time; the pool slides
    every ``steps_per_refresh`` steps, by enough to pass over them all in
    ``refreshes`` slides when that is given.

    Loads and freezes the regressor once; the caller's network (if one was
    given) is not touched. Raises AlqaInputError for a regressor that does not
    load, unknown or duplicate case ids, or no unlabeled case to use.
    """
    if not config.enabled:
        return None
    ids = [u.case_id for u in unlabeled]
    if len(set(ids)) != len(ids):
        raise AlqaInputError(None, f"qa_loss: duplicate unlabeled case ids {sorted({i for i in ids if ids.count(i) > 1})}")
    if config.case_ids:
        unknown = sorted(set(config.case_ids) - set(ids))
        if unknown:
            raise AlqaInputError(None, f"qa_loss case_ids {unknown} are not among the unlabeled cases given")
        chosen = set(config.case_ids)
        unlabeled = [u for u in unlabeled if u.case_id in chosen]
    if not unlabeled:
        raise AlqaInputError(None, "qa_loss is on (weight > 0) but there is no unlabeled case to score")
    regressor, montage_px, source = _frozen_regressor(config)
    return QALossTerm(config, tuple(unlabeled), table, regressor, int(montage_px), source, cases_in_memory, int(steps_per_refresh), refreshes)


__all__ = [
    "STEPS_PER_REFRESH",
    "QALossTerm",
    "Unlabeled",
    "UnlabeledCase",
    "UnlabeledFile",
    "build_qa_loss",
    "montage_slice_indices",
    "qa_montage_tensor",
]
