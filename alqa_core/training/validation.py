"""Per-organ validation Dice on whole volumes (MONAI sliding window).

Only the organs a case annotates are scored on that case, and only inside its
annotated voxels. An organ absent from a case's ground truth gives no score
there (``monai.metrics.compute_dice(ignore_empty=True)`` -> NaN), so the
per-organ Dice is the mean over the cases where the organ is present.

Cases may be on-demand handles (:class:`~alqa_core.training.cases.LazyCase`):
each is loaded, scored and released before the next, so validation holds one
case and its logits at a time, whatever the number of validation cases.
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import compute_dice

from alqa_core.organs import OrganTable
from alqa_core.training.cases import TrainingCase, TrainingItem, one_hot_organs


def predict_logits(
    network: torch.nn.Module,
    image: np.ndarray,
    roi_size_vox: Sequence[int],
    device: torch.device,
    amp: bool = False,
    sw_batch_size: int = 2,
    overlap: float = 0.25,
) -> torch.Tensor:
    """Logits (1, C, i, j, k) on CPU for one (i, j, k) image, by sliding window."""
    x = torch.tensor(np.asarray(image, dtype=np.float32))[None, None].to(device)  # copy: inputs are read-only
    autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        out = sliding_window_inference(x, tuple(roi_size_vox), sw_batch_size, network, overlap=overlap, mode="gaussian")
    return out.float().cpu()


def case_dice(logits: torch.Tensor, case: TrainingCase, table: OrganTable, threshold: float = 0.5) -> dict[str, float]:
    """Dice per organ the case annotates (NaN where the organ is absent from its ground truth)."""
    pred = (torch.sigmoid(logits) > threshold).float()
    truth = torch.from_numpy(one_hot_organs(np.asarray(case.label), table))[None]
    if case.annotated_voxels is not None:
        mask = torch.tensor(np.asarray(case.annotated_voxels))[None, None].float()
        pred, truth = pred * mask, truth * mask
    dice = compute_dice(pred, truth, include_background=True, ignore_empty=True)[0]
    return {name: float(dice[c]) for c, name in enumerate(table.names) if name in case.annotated_organs}


def validation_dice(
    network: torch.nn.Module,
    cases: Sequence[TrainingItem],
    table: OrganTable,
    roi_size_vox: Sequence[int],
    device: torch.device,
    amp: bool = False,
    sw_batch_size: int = 2,
    overlap: float = 0.25,
) -> dict[str, float]:
    """Per-organ mean Dice over ``cases`` (NaN for an organ no case scores). Leaves the network in eval mode."""
    network.eval()
    scores: dict[str, list[float]] = {name: [] for name in table.names}
    for item in cases:
        case = item.load()  # one case in memory at a time: released when the next one replaces it
        logits = predict_logits(network, case.image, roi_size_vox, device, amp, sw_batch_size, overlap)
        for name, value in case_dice(logits, case, table).items():
            if not math.isnan(value):
                scores[name].append(value)
        del case, logits
    return {name: (float(np.mean(v)) if v else math.nan) for name, v in scores.items()}


def mean_dice(per_organ: dict[str, float]) -> float:
    """Mean over organs that have a score; NaN if none has."""
    values = [v for v in per_organ.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


__all__ = ["case_dice", "mean_dice", "predict_logits", "validation_dice"]
