"""The model registry as data: architectures, size presets and what each needs of its input.

A network is named by (architecture, size); :class:`ModelSpec` records that
plus the number of organ heads and is stored verbatim in checkpoints. The
builders that turn a spec into a MONAI network live in
:mod:`alqa_core.ensemble.networks`; this table is torch-free, so validating a
campaign file does not load torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

#: The architectures a campaign can train (MONAI networks, built in :mod:`alqa_core.ensemble.networks`).
ARCHITECTURES = ("unet", "segresnet", "swinunetr", "dynunet")
SIZES = ("tiny", "full")


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a network: stored verbatim in checkpoints."""

    arch: str
    size: str
    n_organs: int
    dropout: float = 0.0
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "size": self.size,
            "n_organs": int(self.n_organs),
            "dropout": float(self.dropout),
            "overrides": dict(self.overrides),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSpec":
        return cls(d["arch"], d["size"], int(d["n_organs"]), float(d.get("dropout", 0.0)), dict(d.get("overrides", {})))


#: (architecture, size) -> builder keyword arguments.
PRESETS: Mapping[tuple[str, str], Mapping[str, Any]] = MappingProxyType(
    {
        ("unet", "tiny"): {"channels": (8, 16, 32, 64), "strides": (2, 2, 2), "num_res_units": 1},
        ("unet", "full"): {"channels": (32, 64, 128, 256, 320), "strides": (2, 2, 2, 2), "num_res_units": 2},
        ("segresnet", "tiny"): {"init_filters": 8, "blocks_down": (1, 1, 1, 1), "blocks_up": (1, 1, 1)},
        ("segresnet", "full"): {"init_filters": 32, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1)},
        ("swinunetr", "tiny"): {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (3, 3, 3, 3)},
        ("swinunetr", "full"): {"feature_size": 48, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24)},
        ("dynunet", "tiny"): {"depth": 4, "filters": (8, 16, 32, 64)},
        ("dynunet", "full"): {"depth": 6, "filters": (32, 64, 128, 256, 320, 320), "res_block": True},
    }
)

#: Patch edge a network needs its input divisible by (sliding-window roi sizes must respect it).
DIVISIBILITY: Mapping[str, int] = MappingProxyType({"unet": 16, "segresnet": 8, "swinunetr": 32, "dynunet": 32})


def architectures() -> tuple[str, ...]:
    return ARCHITECTURES


__all__ = ["ARCHITECTURES", "DIVISIBILITY", "PRESETS", "SIZES", "ModelSpec", "architectures"]
