"""The networks: a registry spec (architecture x size preset) -> a MONAI network.

Every network takes one CT channel and returns ``n_organs`` logits, one per
organ (per-organ sigmoid heads, multi-label, as the AbdomenAtlas universal
model). Apply ``torch.sigmoid`` to get probabilities; channels do not compete,
so two organs can both exceed 0.5 at a voxel and Eq. 3's overlap is
observable within one model.

The registry is a table of (architecture, size) -> keyword arguments
(:mod:`alqa_core.config.models`, torch-free) for one builder per
architecture here; there is no subclass per hyperparameter.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

import torch
from monai.networks import nets

from alqa_core.config.models import PRESETS, SIZES, ModelSpec


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


__all__ = ["BUILDERS", "build_network", "has_dropout"]
