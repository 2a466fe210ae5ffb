"""The QA regressor: a MONAI ResNet-18 that predicts the human grade (0..2) from a 256 px montage.

001_e60473b22d13ca03.txt §2.3 and §3.2.3: ResNet-18, input montages
downsampled to 256x256, regression of the 0/1/2 grade with an MSE loss,
lr 1e-4, the epoch with the lowest validation error kept. Here:

- the network is ``monai.networks.nets.resnet18(spatial_dims=2,
  n_input_channels=3, num_classes=1)``; ``conv1_stride`` 2 (the default)
  makes its stem the torchvision one, and ``widen_factor`` < 1 gives the tiny
  variants tests use. Weights start random: MONAI's pretrained weights are 3D
  only and nothing here downloads ImageNet weights;
- input: uint8 montages scaled to [0, 1] (the same range
  :func:`alqa_core.qa.montage.montage_tensor` produces);
- train/validation split BY CASE, so two montages of one case (two rounds)
  never sit on both sides: sorted unique case ids, a seeded permutation,
  ``ceil(val_fraction * n_cases)`` for validation (at least one on each side),
  or ``val_case_ids`` given explicitly;
- deterministic on CPU for a seed: seeding happens inside
  ``torch.random.fork_rng`` and shuffling uses its own generator, so the
  caller's global RNG is untouched;
- :func:`score_montages` clips predictions to [0, 2];
- :func:`qa_loss` makes a frozen regressor an extra loss term (001 §2.4, "MSEL"):
  the mean squared predicted grade, i.e. the distance to "success".

Checkpoints are one ``torch.save`` of plain data (config, weights, validation
figures), loaded with ``weights_only=True``; writes are atomic.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from monai.networks.nets import resnet18

from alqa_core.config.sections import QARegressorConfig
from alqa_core.ensemble.checkpoint import load_payload, utc_now_iso
from alqa_core.ensemble.device import resolve_device, torch_threads
from alqa_core.errors import AlqaInputError
from alqa_core.io.atomic import atomic_path
from alqa_core.workspace import validate_case_id

QA_CHECKPOINT_FORMAT = "alqa-qa-regressor"
QA_CHECKPOINT_VERSION = 1
GRADE_MIN, GRADE_MAX = 0.0, 2.0


@dataclass(frozen=True)
class EpochMSE:
    epoch: int  # 1-based
    train_mse: float
    val_mse: float


@dataclass(frozen=True, eq=False)
class QARegressorResult:
    network: torch.nn.Module  # eval mode, on the training device
    history: tuple[EpochMSE, ...]
    val_mse: float  # of the kept weights
    val_case_ids: tuple[str, ...]
    config: QARegressorConfig
    best_epoch: int
    #: validation MSE of always predicting the training grades' mean (the bar to beat)
    baseline_val_mse: float


@dataclass(frozen=True, eq=False)
class LoadedQARegressor:
    network: torch.nn.Module  # eval mode
    config: QARegressorConfig
    val_mse: float
    val_case_ids: tuple[str, ...]
    created_at: str


def build_qa_regressor(config: QARegressorConfig = QARegressorConfig()) -> torch.nn.Module:
    """A freshly initialised 2D ResNet-18 with one output (the grade)."""
    return resnet18(
        pretrained=False,
        spatial_dims=2,
        n_input_channels=3,
        num_classes=1,
        conv1_t_stride=config.conv1_stride,
        widen_factor=config.widen_factor,
    )


def split_by_case(case_ids: Sequence[str], config: QARegressorConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train case ids, validation case ids), both sorted; see the module doc."""
    unique = sorted(set(case_ids))
    if config.val_case_ids:
        unknown = sorted(set(config.val_case_ids) - set(unique))
        if unknown:
            raise AlqaInputError(None, f"QA regressor val_case_ids {unknown} have no montage")
        val = set(config.val_case_ids)
    else:
        if len(unique) < 2:
            raise AlqaInputError(None, f"QA regressor: need montages of at least 2 cases to validate, got {len(unique)}")
        n_val = min(len(unique) - 1, max(1, math.ceil(config.val_fraction * len(unique))))
        order = np.random.default_rng(config.seed).permutation(len(unique))
        val = {unique[i] for i in order[:n_val]}
    train = tuple(c for c in unique if c not in val)
    if not train:
        raise AlqaInputError(None, "QA regressor: every case is in validation; none left to train on")
    return train, tuple(sorted(val))


def _montage_batch(montages: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 (N, 3, H, W) from (H, W, 3) uint8 montages of one shape."""
    arrays = [np.asarray(m) for m in montages]
    if not arrays:
        return torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
    shape = arrays[0].shape
    for i, m in enumerate(arrays):
        if m.dtype != np.uint8 or m.ndim != 3 or m.shape[2] != 3 or m.shape != shape:
            raise AlqaInputError(None, f"montage {i}: expected uint8 {shape} like the first, got {m.dtype} {m.shape}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _to_input(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    return batch_u8.to(device).float().div_(255.0)


def _predict(network: torch.nn.Module, images_u8: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    outs = [network(_to_input(images_u8[i : i + batch_size], device)).reshape(-1).float().cpu() for i in range(0, len(images_u8), batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    chunks = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:  # BatchNorm needs > 1 sample in train mode
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


def train_qa_regressor(
    montages: Sequence[tuple[str, np.ndarray]],
    grades: Sequence[float],
    config: QARegressorConfig = QARegressorConfig(),
    *,
    on_epoch: Callable[[EpochMSE], None] | None = None,
) -> QARegressorResult:
    """Train the regressor on ``(case_id, uint8 (input_px, input_px, 3))`` montages and their grades."""
    if len(montages) != len(grades):
        raise AlqaInputError(None, f"QA regressor: {len(montages)} montages but {len(grades)} grades")
    case_ids = [validate_case_id(str(c)) for c, _ in montages]
    images = _montage_batch([m for _, m in montages])
    if images.shape[1:] != (3, config.input_px, config.input_px):
        raise AlqaInputError(None, f"QA regressor: montages must be {config.input_px} px square (downsample them), got {tuple(images.shape[2:])}")
    targets = torch.as_tensor(np.asarray(grades, dtype=np.float32))
    if not bool(torch.all(torch.isfinite(targets) & (targets >= GRADE_MIN) & (targets <= GRADE_MAX))):
        raise AlqaInputError(None, "QA regressor: grades must be numbers in [0, 2]")
    train_ids, val_ids = split_by_case(case_ids, config)
    val_set = set(val_ids)
    val_idx = torch.tensor([i for i, c in enumerate(case_ids) if c in val_set])
    train_idx = torch.tensor([i for i, c in enumerate(case_ids) if c not in val_set])
    if len(train_idx) < 2:
        raise AlqaInputError(None, f"QA regressor: need at least 2 training montages, got {len(train_idx)}")
    baseline = float(((targets[val_idx] - targets[train_idx].mean()) ** 2).mean())

    device = resolve_device(config.device, "qa.device")
    history: list[EpochMSE] = []
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices), torch_threads(config.num_threads):
        torch.manual_seed(config.seed)
        network = build_qa_regressor(config)
        with torch.no_grad():  # start from "predict the training mean", the baseline to beat
            network.fc.bias.fill_(float(targets[train_idx].mean()))
        network = network.to(device)
        optimizer = torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        best = (math.inf, 0, None)
        for epoch in range(1, config.epochs + 1):
            network.train()
            total = 0.0
            for chunk in _batches(len(train_idx), config.batch_size, generator):
                idx = train_idx[chunk]
                pred = network(_to_input(images[idx], device)).reshape(-1)
                loss = torch.nn.functional.mse_loss(pred, targets[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            network.eval()
            with torch.inference_mode():
                val_pred = _predict(network, images[val_idx], device, config.batch_size)
            record = EpochMSE(epoch, total / len(train_idx), float(((val_pred - targets[val_idx]) ** 2).mean()))
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if not config.keep_best or record.val_mse < best[0]:
                best = (record.val_mse, epoch, copy.deepcopy(network.state_dict()) if config.keep_best else None)
    if config.keep_best:
        network.load_state_dict(best[2])
    network.eval()
    return QARegressorResult(network, tuple(history), best[0], val_ids, config, best[1], baseline)


def score_montages(network: torch.nn.Module, montages: Sequence[np.ndarray] | np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """Predicted grades in [0, 2], one per uint8 ``(H, W, 3)`` montage (use the size it was trained on).

    The network is run in eval mode and its train/eval flag is restored afterwards.
    """
    images = _montage_batch(montages)
    if len(images) == 0:
        return np.zeros(0, dtype=np.float64)
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            pred = _predict(network, images, device, batch_size)
    finally:
        network.train(was_training)
    return np.clip(pred.numpy().astype(np.float64), GRADE_MIN, GRADE_MAX)


def freeze_regressor(network: torch.nn.Module) -> torch.nn.Module:
    """A copy in eval mode with no trainable parameters (the input is left as it is)."""
    return copy.deepcopy(network).eval().requires_grad_(False)


def qa_loss(regressor: torch.nn.Module, montages: torch.Tensor, target: float = GRADE_MIN) -> torch.Tensor:
    """Mean squared distance of the predicted grade from ``target`` (0: success); differentiable.

    ``montages``: float ``(B, 3, H, W)`` or ``(3, H, W)`` in [0, 1], e.g. from
    :func:`alqa_core.qa.montage.montage_tensor`, so gradients reach the
    segmentation network's probabilities. ``regressor`` must be frozen
    (:func:`freeze_regressor`): in train mode BatchNorm would use and update batch statistics.
    """
    if regressor.training:
        raise ValueError("qa_loss needs a frozen regressor in eval mode (use freeze_regressor)")
    x = montages.unsqueeze(0) if montages.ndim == 3 else montages
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"qa_loss: montages must be (B, 3, H, W) or (3, H, W), got {tuple(montages.shape)}")
    pred = regressor(x).reshape(-1)
    return ((pred - float(target)) ** 2).mean()


# ----------------------------------------------------------------- checkpoints


def save_qa_regressor(path: str | Path, result: QARegressorResult) -> Path:
    """Write the regressor's weights, config and validation figures atomically; return the path."""
    path = Path(path)
    payload = {
        "format": QA_CHECKPOINT_FORMAT,
        "version": QA_CHECKPOINT_VERSION,
        "config": result.config.to_dict(),
        "val_mse": float(result.val_mse),
        "baseline_val_mse": float(result.baseline_val_mse),
        "best_epoch": int(result.best_epoch),
        "val_case_ids": list(result.val_case_ids),
        "history": [asdict(h) for h in result.history],
        "created_at": utc_now_iso(),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in result.network.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_qa_regressor(path: str | Path, device: str = "cpu") -> LoadedQARegressor:
    """Rebuild a saved regressor in eval mode on ``device`` ("auto" allowed)."""
    path = Path(path)
    payload = load_payload(path, QA_CHECKPOINT_FORMAT, QA_CHECKPOINT_VERSION, "QA regressor checkpoint")
    try:
        config = QARegressorConfig.from_dict(payload["config"])
        network = build_qa_regressor(config)
        network.load_state_dict(payload["state_dict"], strict=True)
        val_mse, val_case_ids = float(payload["val_mse"]), tuple(str(c) for c in payload["val_case_ids"])
        created_at = str(payload["created_at"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise AlqaInputError(path, f"QA regressor checkpoint is invalid ({type(exc).__name__}: {exc})") from exc
    return LoadedQARegressor(network.to(resolve_device(device)).eval(), config, val_mse, val_case_ids, created_at)


__all__ = [
    "EpochMSE",
    "LoadedQARegressor",
    "QARegressorResult",
    "QA_CHECKPOINT_FORMAT",
    "build_qa_regressor",
    "freeze_regressor",
    "load_qa_regressor",
    "qa_loss",
    "save_qa_regressor",
    "score_montages",
    "split_by_case",
    "train_qa_regressor",
]
