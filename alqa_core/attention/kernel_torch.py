"""Eq. 1-3 with torch, dense, on a CPU or a GPU: bit-identical to :mod:`.kernel`.

For a pipeline whose soft predictions are already on the GPU (the uint8
block of one case is a few hundred MB; an H200 holds it many times over):
the same arithmetic as the numpy kernel, but on every voxel at once instead
of only the active words, since a GPU has bandwidth to spare and branches
cost it more than arithmetic. The integer sums are exact; the float64
entropy is summed member by member from 0.0 and then divided, and the std
is ``sqrt(d) / (n * 255)``, the operations and order of the numpy kernel.
IEEE float64 ``+`` and ``/`` are correctly rounded on CUDA as on a CPU, so
the bits match, provided divisions are by tensors: torch turns division by
a Python scalar into a multiplication by its reciprocal on CUDA. torch's CPU
``sqrt`` is not always correctly rounded, so the std of each distinct
integer ``d`` comes from numpy. ``benchmarks/bench_gpu.py`` checks the bits
on the GPU.

torch is imported only by this module, and this module only when a caller
asks for ``backend="torch"`` (the attention stage stays torch-free
otherwise; pyproject's import contract names this one exception).
"""

from __future__ import annotations

import numpy as np
import torch

from alqa_core.attention.constants import entropy_lut, quiet_levels, std_threshold_int
from alqa_core.attention.organ_stats import OrganStats
from alqa_core.config.sections import AttentionConfig
from alqa_core.errors import AlqaInputError


def attention_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else CPU; a CUDA device on a machine without one is refused."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AlqaInputError(None, f"attention device {str(device)!r} but CUDA is not available")
    return dev


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.cpu().numpy()


def organ_statistics_torch(
    block3: np.ndarray | torch.Tensor,
    coverage: np.ndarray,
    one_hot: np.ndarray,
    scored: list[int],
    config: AttentionConfig,
    *,
    device: str | torch.device | None = None,
) -> dict[int, OrganStats]:
    """:func:`alqa_core.attention.kernel.organ_statistics` on ``device`` (default: CUDA when available).

    ``block3``: uint8 (M, C, N), numpy or a torch tensor (used where it is
    when ``device`` is None). Returns numpy arrays, as the other kernels.
    """
    if isinstance(block3, torch.Tensor):
        dev = block3.device if device is None else attention_device(device)
        x = block3.to(dev)
    else:
        dev = attention_device(device)
        x = torch.from_numpy(np.ascontiguousarray(block3)).to(dev)
    if x.dtype != torch.uint8 or x.ndim != 3:
        raise AlqaInputError(None, f"attention: expected a uint8 (members, organs, voxels) block, got {x.dtype} {tuple(x.shape)}")
    m_count, c_count, n = x.shape
    coverage = np.asarray(coverage, dtype=bool)
    hot = np.asarray(one_hot, dtype=bool)
    levels = quiet_levels(config)
    lut = torch.tensor(entropy_lut(config.entropy), dtype=torch.float64, device=dev)
    covered = [c for c in range(c_count) if coverage[:, c].any()]
    overlap = None
    if len(covered) >= 2:
        if c_count > 129:
            raise ValueError(f"at most 129 organ channels are supported, got {c_count}")
        cov = torch.as_tensor(coverage, device=dev)
        high = (x >= 128) & cov[:, :, None]  # p > 0.5, only where the member covers the organ
        count = high.sum(dim=1, dtype=torch.int16)  # (M, N): organs > 0.5 per member
        overlap = (high & (count >= 2)[:, None, :]).any(dim=0)  # (C, N)
        if hot.any():  # a one-hot member cannot overlap itself: other members' other organs count
            total = count.sum(dim=0, dtype=torch.int16)
            per_organ = high.sum(dim=0, dtype=torch.int16)
            for m in np.flatnonzero(hot):
                others = (total - count[m])[None, :] - (per_organ - high[m].to(torch.int16))
                overlap |= high[m] & (others >= 1)
    empty = np.zeros(0, dtype=np.int64)
    out = {}
    for c in scored:
        members = np.flatnonzero(coverage[:, c])
        nm = int(members.size)
        q = x[torch.as_tensor(members, device=dev), c]  # (nm, N) uint8
        hi, lo = q[0], q[0]
        for j in range(1, nm):  # elementwise over a few members: much faster than a reduction over dim 0 on a CPU
            hi, lo = torch.maximum(hi, q[j]), torch.minimum(lo, q[j])
        quiet_high = lo >= levels.high if levels.high <= 255 else torch.zeros_like(lo, dtype=torch.bool)
        band = (hi > levels.low) & ~quiet_high
        pos = torch.nonzero(band).flatten()
        qb = q[:, pos].to(torch.int64)
        ent = torch.zeros(pos.numel(), dtype=torch.float64, device=dev)
        for j in range(nm):  # member by member, as the numpy kernel sums
            ent += lut[qb[j]]
        # divisors as tensors: torch turns division by a Python scalar into a multiplication by its
        # reciprocal on CUDA, which can differ from numpy's division in the last bit
        ent = ent / torch.full_like(ent, float(nm))
        s1 = qb.sum(dim=0)
        s2 = (qb * qb).sum(dim=0)
        d = s2 * nm - s1 * s1  # = (n * 255 * std)^2, exactly
        # std from its integer d through numpy: torch's CPU sqrt (SLEEF, 0.5 ulp) is not always
        # correctly rounded; d takes few distinct values (< (n * 255)^2 / 4), each computed once
        values, inverse = torch.unique(d, return_inverse=True)
        std_of = np.sqrt(_numpy(values).astype(np.float64)) / (nm * 255.0)
        std = torch.from_numpy(std_of).to(dev)[inverse]
        organ = int(quiet_high.sum()) + int((2 * s1 > 255 * nm).sum())
        out[c] = OrganStats(
            band=_numpy(pos),
            inconsistent=_numpy(d > std_threshold_int(config.inconsistency_threshold, nm)),
            uncertain=_numpy(ent > config.uncertainty_threshold),
            std=_numpy(std),
            entropy=_numpy(ent),
            overlap=_numpy(torch.nonzero(overlap[c]).flatten()) if overlap is not None else empty,
            organ_voxels=organ,
        )
    return out
