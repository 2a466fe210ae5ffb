"""Where a network runs: the torch device a setting names, and torch's CPU thread count for a block."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from alqa_core.errors import AlqaInputError


def resolve_device(name: str | torch.device = "auto", setting: str = "device") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given, refused if it names CUDA on a machine without.

    ``setting`` names the config field in the error (``training.device``).
    """
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AlqaInputError(None, f"{setting}={str(name)!r} but CUDA is not available")
    return device


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` inside the block and restored after (None: left alone)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
