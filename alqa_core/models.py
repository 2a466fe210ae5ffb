"""Model registry: architecture name x size preset -> a MONAI network.

Every network takes one CT channel and returns ``n_organs`` logits, one per
organ (per-organ sigmoid heads, multi-label, as the AbdomenAtlas universal
model). Apply ``torch.sigmoid`` to get probabilities; channels do not compete,
so two organs can both exceed 0.5 at a voxel and Eq. 3's overlap is
observable within one model.

The registry is a table of (architecture, size) -> keyword arguments for one
builder per architecture; there is no subclass per hyperparameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
from monai.networks import nets

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


def _unet(n_out: int, dropout: float, **kw) -> torch.nn.Module:
    return nets.UNet(spatial_dims=3, in_channels=1, out_channels=n_out, dropout=dropout, **kw)


def _segresnet(n_out: int, dropout: float, **kw) -> torch.nn.Module:
    return nets.SegResNet(spatial_dims=3, in_channels=1, out_channels=n_out, dropout_prob=dropout or None, **kw)


def _swinunetr(n_out: int, dropout: float, **kw) -> torch.nn.Module:
    return nets.SwinUNETR(in_channels=1, out_channels=n_out, drop_rate=dropout, spatial_dims=3, **kw)


def _dynunet(n_out: int, dropout: float, **kw) -> torch.nn.Module:
    # nnU-Net style: 3x3x3 kernels, stride-2 downsampling, instance norm, leaky ReLU.
    depth = kw.pop("depth")
    kernels = [[3, 3, 3]] * depth
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (depth - 1)
    return nets.DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=n_out,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        dropout=dropout or None,
        **kw,
    )


#: architecture -> builder(n_out, dropout, **preset_kwargs)
BUILDERS: Mapping[str, Callable[..., torch.nn.Module]] = MappingProxyType(
    {"unet": _unet, "segresnet": _segresnet, "swinunetr": _swinunetr, "dynunet": _dynunet}
)

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
    return tuple(BUILDERS)


def build_network(spec: ModelSpec) -> torch.nn.Module:
    """Instantiate the MONAI network a spec describes (weights freshly initialised)."""
    arch = spec.arch.lower()
    if arch not in BUILDERS:
        raise KeyError(f"unknown architecture {spec.arch!r}; known: {sorted(BUILDERS)}")
    if (arch, spec.size) not in PRESETS:
        raise KeyError(f"unknown size {spec.size!r} for {arch}; known: {list(SIZES)}")
    kwargs = {**PRESETS[(arch, spec.size)], **dict(spec.overrides)}
    return BUILDERS[arch](spec.n_organs, float(spec.dropout), **kwargs)


def has_dropout(network: torch.nn.Module) -> bool:
    """True if the network has any dropout layer with p > 0 (MC dropout possible)."""
    return any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in network.modules())


__all__ = ["BUILDERS", "DIVISIBILITY", "PRESETS", "SIZES", "ModelSpec", "architectures", "build_network", "has_dropout"]
