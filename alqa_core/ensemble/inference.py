"""Ensemble inference: sliding-window probabilities, MC dropout, batches of cases.

Every prediction goes through MONAI's :func:`~monai.inferers.sliding_window_inference`
under :func:`torch.inference_mode`. Networks have per-organ sigmoid heads, so
the outputs are ``(C, i, j, k)`` probabilities that need not sum to one.

A network is *prepared* once (:func:`prepare_network`): copied, put in eval
mode, moved to the device and, on CPU, converted to channels-last. The
caller's module is never touched. :func:`predict_batch` prepares each
ensemble member once for a whole batch of cases (outer loop over members,
inner loop over cases) and maps the probabilities back to each case's
original grid as uint8 :class:`~alqa_core.volume.SoftPrediction`.

What makes it fast (the first three are measured, as ablations, in
``benchmarks/bench_inference.py`` and change the outputs by float rounding
only; the others simply avoid work):

- ``torch.inference_mode`` (no autograd graph, no saved activations);
- ``sw_batch_size`` > 1 windows per forward pass: PyTorch's CPU Conv3d runs
  a batch of one through the im2col ``slow_conv3d`` and larger batches
  through oneDNN, 2-3x faster (a lone window is repeated to a batch of two);
- channels-last-3d weights and windows on CPU (oneDNN's layout);
- a gaussian blending map computed once per (roi, device), not per call;
- the ROI clamped to the volume (rounded up to the networks' divisibility)
  so a thin volume is not padded up to a cubic window;
- autocast on CUDA only (bf16 where the GPU supports it, else fp16);
  stitching always accumulates in float32. cuDNN autotuning is a process-wide
  switch (``torch.backends.cudnn.benchmark``), left to the caller.

Tried and not kept: swapping InstanceNorm for the equivalent GroupNorm (its
channels-last CPU kernel is 2.5x faster but drifts ~1e-3 in the logits),
TorchScript freezing (no gain), bf16 on CPU (no native bf16 on AVX2 CPUs).
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference

from alqa_core.config.sections import InferenceConfig
from alqa_core.ensemble.checkpoint import load_checkpoint
from alqa_core.ensemble.device import resolve_device
from alqa_core.ensemble.networks import has_dropout
from alqa_core.errors import AlqaInputError
from alqa_core.ingest.preprocess import PreprocessedCT, to_original_grid
from alqa_core.volume import SoftPrediction, quantize_probabilities


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# --------------------------------------------------------------------------- networks


@dataclass(frozen=True, eq=False)
class PreparedNetwork:
    """A private copy of a network, in eval mode on ``device``, ready for inference.

    With ``mc_dropout`` its dropout layers (only those) are in train mode.
    """

    module: torch.nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    mc_dropout: bool = False


def prepare_network(network: torch.nn.Module, config: InferenceConfig, *, mc_dropout: bool = False) -> PreparedNetwork:
    """Copy ``network`` onto the config's device, eval mode, optionally channels-last.

    This is the one place a model is moved to a device; :func:`predict_batch`
    calls it once per member. With ``mc_dropout`` the copy's dropout layers
    are switched to train mode and everything else (norms) stays in eval;
    raises ValueError if the network has no dropout with p > 0.
    """
    if mc_dropout and not has_dropout(network):
        raise ValueError("MC dropout needs a network with dropout > 0 (build it with ModelSpec(dropout=...))")
    device = resolve_device(config.device, "inference.device")
    channels_last = config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cpu")
    module = copy.deepcopy(network).to(device).eval()
    if channels_last:
        module = module.to(memory_format=torch.channels_last_3d)
    if mc_dropout:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                m.train()
    for p in module.parameters():
        p.requires_grad_(False)
    return PreparedNetwork(module, device, _amp_dtype(config.amp, device), channels_last, mc_dropout)


def _as_prepared(network: torch.nn.Module | PreparedNetwork, config: InferenceConfig, mc_dropout: bool) -> PreparedNetwork:
    if not isinstance(network, PreparedNetwork):
        return prepare_network(network, config, mc_dropout=mc_dropout)
    if network.mc_dropout != mc_dropout:
        want = "with" if mc_dropout else "without"
        raise ValueError(f"this PreparedNetwork was prepared {'with' if network.mc_dropout else 'without'} "
                         f"MC dropout; prepare it {want} (prepare_network(..., mc_dropout={mc_dropout}))")
    return network


# --------------------------------------------------------------------------- sliding window


@functools.lru_cache(maxsize=16)
def _importance_map(roi: tuple[int, ...], mode: str, sigma_scale: float, device: str) -> torch.Tensor:
    # MONAI recomputes this map on every call unless it is passed in.
    return compute_importance_map(roi, mode=mode, sigma_scale=sigma_scale, device=device, dtype=torch.float32)


def effective_roi(image_shape: Sequence[int], config: InferenceConfig) -> tuple[int, int, int]:
    """The window actually used: ``roi_size_vox`` clamped to the volume rounded up to the divisibility."""
    d = config.roi_divisible_by
    return tuple(min(r, int(math.ceil(s / d) * d)) for r, s in zip(config.roi_size_vox, image_shape))


def _check_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"image must be a 3D (i, j, k) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"image must be float (preprocessed to [0, 1]), got {arr.dtype}")
    return arr


def _forward(prepared: PreparedNetwork, x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    if n == 1 and prepared.device.type == "cpu" and not prepared.mc_dropout:
        # PyTorch's CPU Conv3d dispatch picks the im2col ``slow_conv3d`` for a
        # batch of one and oneDNN from two up; a zero-copy repeat of a lone
        # window (one-window volumes, a last partial batch) halves its time.
        x = x.expand(2, *x.shape[1:])
    if prepared.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    if prepared.amp_dtype is None:
        out = prepared.module(x)
    else:
        with torch.autocast(prepared.device.type, dtype=prepared.amp_dtype):
            out = prepared.module(x).float()
    return out[:n]


def _run_windows(
    prepared: PreparedNetwork, image: np.ndarray, config: InferenceConfig, predictor: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """MONAI sliding window over ``image``; returns (C, i, j, k) float32 on ``prepared.device``."""
    x = torch.tensor(np.asarray(image, dtype=np.float32), device=prepared.device)[None, None]
    roi = effective_roi(image.shape, config)
    weights = _importance_map(roi, config.blend_mode, float(config.sigma_scale), str(prepared.device))
    out = sliding_window_inference(
        x,
        roi,
        config.sw_batch_size,
        predictor,
        overlap=config.overlap,
        mode=config.blend_mode,
        sigma_scale=config.sigma_scale,
        roi_weight_map=weights,
    )
    return out[0]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.to("cpu", torch.float32).numpy())


def predict_probabilities(
    network: torch.nn.Module | PreparedNetwork, image: np.ndarray, config: InferenceConfig = InferenceConfig()
) -> np.ndarray:
    """Per-organ sigmoid probabilities, float32 ``(C, i, j, k)`` in [0, 1].

    Logits are blended across windows (constant or gaussian weights), then
    passed through the sigmoid once. ``network`` may be a plain module (it is
    prepared for this call only) or a :class:`PreparedNetwork`.
    """
    return _probabilities(_as_prepared(network, config, mc_dropout=False), _check_image(image), config)


def _probabilities(prepared: PreparedNetwork, img: np.ndarray, config: InferenceConfig) -> np.ndarray:
    """One sliding-window pass of a prepared network (its dropout active if it was prepared for MC dropout)."""
    with torch.inference_mode():
        logits = _run_windows(prepared, img, config, lambda x: _forward(prepared, x))
        return _to_numpy(torch.sigmoid_(logits))


# --------------------------------------------------------------------------- MC dropout


@dataclass(frozen=True, eq=False)
class McResult:
    """MC-dropout summary of one case.

    ``predictive_entropy[c]`` is the binary entropy (nats, in [0, ln 2]) of
    the mean probability of organ ``c``; ``total_entropy`` is its sum over
    organs, the entropy of the joint of the independent sigmoid heads (in
    [0, C ln 2]).
    """

    mean_probabilities: np.ndarray  # float32 (C, i, j, k)
    predictive_entropy: np.ndarray  # float32 (C, i, j, k)
    total_entropy: np.ndarray  # float32 (i, j, k)
    n_samples: int


def binary_entropy(p: np.ndarray | torch.Tensor, eps: float = 1e-7):
    """``-p ln p - (1-p) ln(1-p)`` in nats, elementwise (numpy or torch)."""
    if isinstance(p, torch.Tensor):
        q = p.clamp(eps, 1 - eps)
        return -(q * torch.log(q) + (1 - q) * torch.log1p(-q))
    q = np.clip(np.asarray(p, dtype=np.float32), eps, 1 - eps)
    return -(q * np.log(q) + (1 - q) * np.log1p(-q))


def mc_dropout_predict(
    network: torch.nn.Module | PreparedNetwork,
    image: np.ndarray,
    n_samples: int,
    config: InferenceConfig = InferenceConfig(),
    seed: int | None = None,
) -> McResult:
    """MC dropout: ``n_samples`` stochastic passes per window, averaged.

    Dropout layers are in train mode, everything else in eval. Each window
    gets ``n_samples`` passes (several per forward when the window batch is
    below ``sw_batch_size``) and its sigmoid probabilities are averaged
    before blending (the mean is linear, so blending means = mean of blends).
    ``seed`` (default ``config.mc_seed``) makes the masks reproducible without
    touching the global RNG. ValueError if the network has no dropout.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    img = _check_image(image)
    prepared = _as_prepared(network, config, mc_dropout=True)
    seed = config.mc_seed if seed is None else seed

    def predictor(x: torch.Tensor) -> torch.Tensor:
        # Several samples share one forward pass when the window batch is
        # smaller than sw_batch_size: each copy draws its own dropout masks.
        b = x.shape[0]
        per_pass = max(1, config.sw_batch_size // b)
        total, done = None, 0
        while done < n_samples:
            k = min(per_pass, n_samples - done)
            probs = torch.sigmoid_(_forward(prepared, x.repeat(k, *([1] * (x.ndim - 1)))).float())
            probs = probs.view(k, b, *probs.shape[1:]).sum(0)
            total = probs if total is None else total.add_(probs)
            done += k
        return total / n_samples

    devices = [prepared.device] if prepared.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"), torch.inference_mode():
        torch.manual_seed(seed)
        mean = _run_windows(prepared, img, config, predictor).clamp_(0.0, 1.0)
        entropy = binary_entropy(mean)
        return McResult(_to_numpy(mean), _to_numpy(entropy), _to_numpy(entropy.sum(0)), int(n_samples))


# --------------------------------------------------------------------------- batches


def _soft_prediction(probabilities: np.ndarray, case: PreprocessedCT, organs: tuple[str, ...], member: str) -> SoftPrediction:
    """Map (C, ...) probabilities from the preprocessed grid to the original one, uint8."""
    record = case.record
    if probabilities.shape[0] != len(organs):
        raise ValueError(f"member {member!r} predicts {probabilities.shape[0]} channels for {len(organs)} organs {organs}")
    out = np.empty((len(organs), *record.original.shape), dtype=np.uint8)
    for c in range(len(organs)):  # one channel at a time: C float volumes on a 512^2 grid would be GBs
        out[c] = quantize_probabilities(to_original_grid(probabilities[c], record, mode="linear"))
    return SoftPrediction(out, record.original.affine, tuple(organs), member)


def mc_member_name(member: str, sample: int) -> str:
    """The ensemble member an MC-dropout pass stands for: ``unet-mc03``."""
    return f"{member}-mc{int(sample):02d}"


def predict_batch(
    members: Iterable[tuple[str, torch.nn.Module]],
    cases: Iterable[tuple[str, PreprocessedCT]],
    config: InferenceConfig,
    organs: tuple[str, ...],
) -> Iterator[tuple[str, str, SoftPrediction]]:
    """Yield ``(case_id, member_name, SoftPrediction)`` for every member x case.

    Outer loop over ``members`` (``(name, network)`` pairs; a generator is
    fine and keeps one model in memory at a time), inner loop over ``cases``
    (a re-iterable of ``(case_id, PreprocessedCT)``, iterated once per
    member: pass one that loads each case when reached, and memory holds one
    case, not the batch). Each network is prepared (copied and moved to the
    device) exactly once per batch, never once per case. Probabilities are
    mapped back to the case's original grid (linear) and stored as uint8.

    With ``config.mc_samples`` > 0 every MC-dropout pass is its own member
    (:func:`mc_member_name`), so the passes' spread and entropies feed
    Eq. 1-2 as members do; pass ``i`` is seeded ``config.mc_seed + i``.
    """
    organs = tuple(organs)
    mc = config.mc_samples > 0
    for member, network in members:
        prepared = prepare_network(network, config, mc_dropout=mc)
        devices = [prepared.device] if prepared.device.type == "cuda" else []
        for case_id, case in cases:
            if not mc:
                yield case_id, member, _soft_prediction(predict_probabilities(prepared, case.array, config), case, organs, member)
                continue
            for i in range(config.mc_samples):
                with torch.random.fork_rng(devices=devices, device_type="cuda"):
                    torch.manual_seed(config.mc_seed + i)
                    probs = _probabilities(prepared, _check_image(case.array), config)
                name = mc_member_name(member, i)
                yield case_id, name, _soft_prediction(probs, case, organs, name)
        del prepared


def predict_batch_from_checkpoints(
    checkpoints: Sequence[tuple[str, str | Path]],
    cases: Iterable[tuple[str, PreprocessedCT]],
    config: InferenceConfig,
    organs: tuple[str, ...] | None = None,
) -> Iterator[tuple[str, str, SoftPrediction]]:
    """:func:`predict_batch` over ``(member_name, checkpoint_path)`` pairs.

    Each checkpoint is loaded once, when its member's turn comes, so one
    model is in memory at a time. ``organs`` defaults to the first
    checkpoint's organ table; a checkpoint whose table differs raises
    AlqaInputError naming it.
    """
    expected = None if organs is None else tuple(organs)
    for member, path in checkpoints:
        loaded = load_checkpoint(path, "cpu")
        names = tuple(loaded.meta.organ_table.names)
        expected = names if expected is None else expected
        if names != expected:
            raise AlqaInputError(path, f"checkpoint organs {names} differ from the ensemble's {expected}")
        yield from predict_batch([(member, loaded.network)], cases, config, expected)
        del loaded


__all__ = [
    "mc_member_name",
    "McResult",
    "PreparedNetwork",
    "binary_entropy",
    "effective_roi",
    "mc_dropout_predict",
    "predict_batch",
    "predict_batch_from_checkpoints",
    "predict_probabilities",
    "prepare_network",
]
