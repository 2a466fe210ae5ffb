"""Masked Dice + BCE for per-organ sigmoid heads trained on partial labels.

The weighted soft Dice of 004_03246784a706ec26.txt (Eq. 1),

    L_DSC = 1 - 2 sum_i w_i y_i p_i / (sum_i w_i y_i + sum_i w_i p_i),

with ``w_i = 0`` on unannotated voxels and ``i`` running over every voxel of
the mini-batch, is applied per organ channel. The weight of a voxel for organ
``c`` in case ``b`` is ``organ_weight[b, c] * voxel_mask[b, i]``: an organ the
case's source dataset does not annotate has weight 0 everywhere in that case,
and voxels outside a partial-slice annotation have weight 0 for every organ.
An organ whose weight is 0 over the whole batch is left out of the mean, so it
gives exactly zero gradient; the BCE term uses the same weights.

Hand-written rather than ``monai.losses.DiceLoss``: MONAI's Dice losses take
class weights but no per-voxel weights, and a voxel mask cannot be emulated
by zeroing inputs (a masked-out voxel would still add ``p_i`` to the
denominator). With all weights 1 the result equals
``DiceLoss(sigmoid=True, batch=True)`` + ``BCEWithLogitsLoss()`` (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Same smoothing as monai.losses.DiceLoss's defaults.
SMOOTH_NR = 1e-5
SMOOTH_DR = 1e-5


def voxel_weights(organ_weight: torch.Tensor, voxel_mask: torch.Tensor | None, spatial_ndim: int) -> torch.Tensor:
    """(B, C) organ weights x (B, 1, ...) voxel mask -> (B, C, ...) weights (broadcast view where possible)."""
    w = organ_weight.reshape(organ_weight.shape + (1,) * spatial_ndim)
    return w if voxel_mask is None else w * voxel_mask


def masked_soft_dice_per_organ(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    smooth_nr: float = SMOOTH_NR,
    smooth_dr: float = SMOOTH_DR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-organ weighted soft Dice loss over the whole batch.

    ``logits``/``target``: (B, C, ...); ``weight``: broadcastable to them.
    Returns ``(loss (C,), annotated (C,) bool)``; ``annotated[c]`` is False when
    organ ``c`` has zero weight everywhere in the batch.
    """
    prob = torch.sigmoid(logits.float())
    target = target.float()
    weight = weight.float().expand_as(prob)
    dims = [0] + list(range(2, prob.ndim))
    intersection = (weight * target * prob).sum(dims)
    denominator = (weight * target).sum(dims) + (weight * prob).sum(dims)
    loss = 1.0 - (2.0 * intersection + smooth_nr) / (denominator + smooth_dr)
    annotated = weight.sum(dims) > 0
    return loss, annotated


def masked_dice_bce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    organ_weight: torch.Tensor,
    voxel_mask: torch.Tensor | None = None,
    lambda_dice: float = 1.0,
    lambda_bce: float = 1.0,
) -> torch.Tensor:
    """Scalar Dice + BCE loss on the annotated (case, organ, voxel) triples only.

    ``logits``, ``target``: (B, C, ...); ``organ_weight``: (B, C) in {0, 1} (or
    soft); ``voxel_mask``: (B, 1, ...) or None (all voxels annotated). Dice is
    averaged over organs annotated somewhere in the batch; BCE is the weighted
    mean over annotated voxels. A batch with nothing annotated gives 0 (still
    attached to the graph, with zero gradient).
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    if organ_weight.shape != logits.shape[:2]:
        raise ValueError(f"organ_weight must be (B, C) = {tuple(logits.shape[:2])}, got {tuple(organ_weight.shape)}")
    weight = voxel_weights(organ_weight.to(logits.device, torch.float32), voxel_mask, logits.ndim - 2)
    dice, annotated = masked_soft_dice_per_organ(logits, target, weight)
    # Boolean selection keeps unannotated organs out of the graph entirely.
    dice_term = dice[annotated].mean() if bool(annotated.any()) else logits.sum() * 0.0
    full_weight = weight.float().expand(logits.shape)
    bce_sum = F.binary_cross_entropy_with_logits(logits.float(), target.float(), weight=full_weight, reduction="sum")
    bce_term = bce_sum / full_weight.sum().clamp_min(1.0)
    return lambda_dice * dice_term + lambda_bce * bce_term


__all__ = ["SMOOTH_DR", "SMOOTH_NR", "masked_dice_bce_loss", "masked_soft_dice_per_organ", "voxel_weights"]
