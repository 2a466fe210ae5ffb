"""Model checkpoints that carry everything needed to use and trace them.

A checkpoint file is one ``torch.save`` of plain data (dicts, lists, str,
numbers, tensors), so it loads with ``torch.load(weights_only=True)`` and no
pickled code ever runs. Besides the state dict it holds:

- the full :class:`~alqa_core.config.models.ModelSpec`, so :func:`load_checkpoint`
  rebuilds the network with :func:`~alqa_core.ensemble.networks.build_network` without
  being told what is inside;
- the training config, the organ table and the preprocessing spacing (mm);
- lineage: the parent checkpoint (path + sha256) it was fine-tuned from, a
  fingerprint of the training set and the active-learning round;
- validation metrics and the creation time (UTC, ISO 8601).

Writes are atomic (:func:`alqa_core.io.atomic.atomic_path`).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch

from alqa_core.config.build import plain_data
from alqa_core.config.models import ModelSpec
from alqa_core.ensemble.networks import build_network
from alqa_core.errors import AlqaInputError
from alqa_core.io.atomic import atomic_path
from alqa_core.io.hashing import file_sha256
from alqa_core.organs import OrganTable

#: Marks a file as an alqa checkpoint; bumped when the layout changes.
CHECKPOINT_FORMAT = "alqa-checkpoint"
CHECKPOINT_VERSION = 1


def checkpoint_sha256(path: str | Path) -> str:
    """sha256 hex digest of a checkpoint file's bytes."""
    return file_sha256(path, "checkpoint")


def utc_now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Lineage:
    """Where a checkpoint comes from."""

    parent_path: str | None
    parent_sha256: str | None
    training_set_sha256: str
    round_index: int = 0

    def to_dict(self) -> dict:
        return {
            "parent_path": self.parent_path,
            "parent_sha256": self.parent_sha256,
            "training_set_sha256": self.training_set_sha256,
            "round_index": int(self.round_index),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Lineage":
        return cls(d["parent_path"], d["parent_sha256"], str(d["training_set_sha256"]), int(d["round_index"]))


@dataclass(frozen=True, eq=False)
class CheckpointMeta:
    """Everything in a checkpoint except the weights."""

    spec: ModelSpec
    organ_table: OrganTable
    spacing_mm: tuple[float, float, float]
    lineage: Lineage
    #: the training config as plain data (``TrainConfig.to_dict()``)
    train_config: Mapping[str, Any] = field(default_factory=dict)
    #: e.g. ``{"dice_mean": 0.91, "dice_liver": 0.95, ...}``
    val_metrics: Mapping[str, float] = field(default_factory=dict)
    #: what the run resolved and did: lr, device, amp, validation case ids, best epoch, epochs run, ...
    run_info: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=utc_now_iso)

    def __post_init__(self):
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "train_config", MappingProxyType(dict(self.train_config)))
        object.__setattr__(self, "val_metrics", MappingProxyType({str(k): float(v) for k, v in self.val_metrics.items()}))
        object.__setattr__(self, "run_info", MappingProxyType(dict(self.run_info)))
        if len(self.spacing_mm) != 3:
            raise ValueError(f"spacing_mm must have 3 values, got {self.spacing_mm}")
        if self.spec.n_organs != len(self.organ_table):
            raise ValueError(f"spec has {self.spec.n_organs} outputs but the organ table has {len(self.organ_table)} organs")

    def to_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "organ_table": self.organ_table.to_records(),
            "spacing_mm": list(self.spacing_mm),
            "lineage": self.lineage.to_dict(),
            "train_config": plain_data(dict(self.train_config)),
            "val_metrics": dict(self.val_metrics),
            "run_info": plain_data(dict(self.run_info)),
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CheckpointMeta":
        return cls(
            spec=ModelSpec.from_dict(d["spec"]),
            organ_table=OrganTable.from_pairs((r["value"], r["name"]) for r in d["organ_table"]),
            spacing_mm=tuple(d["spacing_mm"]),
            lineage=Lineage.from_dict(d["lineage"]),
            train_config=dict(d.get("train_config", {})),
            val_metrics=dict(d.get("val_metrics", {})),
            run_info=dict(d.get("run_info", {})),
            created_at=str(d["created_at"]),
        )


@dataclass(frozen=True, eq=False)
class LoadedCheckpoint:
    network: torch.nn.Module  # in eval mode
    meta: CheckpointMeta


def save_checkpoint(path: str | Path, network: torch.nn.Module, meta: CheckpointMeta) -> Path:
    """Write ``network``'s weights and ``meta`` to ``path`` atomically; return the path."""
    path = Path(path)
    state = {k: v.detach().to("cpu").clone() for k, v in network.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "meta": meta.to_dict(),
        "state_dict": state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_payload(path: Path, fmt: str, version: int, what: str) -> Mapping:
    """A plain-data torch file (``weights_only``) carrying ``format``/``version`` markers, or AlqaInputError."""
    if not path.is_file():
        raise AlqaInputError(path, f"{what} file does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt/foreign file (zip, unpickling, EOF)
        raise AlqaInputError(path, f"not a readable {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, Mapping) or payload.get("format") != fmt:
        raise AlqaInputError(path, f"not an alqa {what} (no '{fmt}' marker)")
    if payload.get("version") != version:
        raise AlqaInputError(path, f"{what} version {payload.get('version')!r} is not supported (expected {version})")
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the network a checkpoint describes, load its weights, put it in eval mode on ``device``."""
    path = Path(path)
    payload = load_payload(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "checkpoint")
    try:
        meta = CheckpointMeta.from_dict(payload["meta"])
        network = build_network(meta.spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise AlqaInputError(path, f"checkpoint metadata is invalid ({type(exc).__name__}: {exc})") from exc
    try:
        network.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, RuntimeError) as exc:
        raise AlqaInputError(path, f"weights do not match the stored model spec {meta.spec.to_dict()}: {exc}") from exc
    return LoadedCheckpoint(network.to(device).eval(), meta)


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointMeta",
    "Lineage",
    "LoadedCheckpoint",
    "checkpoint_sha256",
    "load_checkpoint",
    "save_checkpoint",
    "utc_now_iso",
]
