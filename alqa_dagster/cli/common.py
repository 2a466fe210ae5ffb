"""What every ``alqa`` command shares: the campaign and workspace it works on, a progress display, slice lists."""

from __future__ import annotations

import os
import time

from alqa_core.errors import AlqaInputError


class Progress:
    """A one-line-per-step progress display with elapsed times."""

    def __init__(self, total_steps: int):
        self.total, self.step, self.t0 = total_steps, 0, time.perf_counter()

    def __call__(self, message: str) -> None:
        self.step += 1
        counter = f"{self.step}/{self.total}" if self.total else str(self.step)
        print(f"[{counter}] {time.perf_counter() - self.t0:6.1f}s  {message}", flush=True)

    def done(self, message: str) -> None:
        print(f"[done] {time.perf_counter() - self.t0:6.1f}s  {message}", flush=True)


def campaign_config():
    from alqa_core.config.campaign import load_campaign

    path = os.environ.get("ALQA_CAMPAIGN")
    if not path:
        raise AlqaInputError(None, "set ALQA_CAMPAIGN to the campaign YAML (alqa init writes one)")
    return load_campaign(path)


def workspace_layout():
    """The campaign's workspace (``ALQA_WORKSPACE`` overrides its ``workspace_root``), by the rule the resources follow."""
    return campaign_config().layout(os.environ.get("ALQA_WORKSPACE") or None)


def parse_slices(text: str | None) -> tuple[int, ...]:
    """``12,17,30-32`` -> (12, 17, 30, 31, 32); None -> () (a whole-volume revision)."""
    if text is None:
        return ()
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            first, last = 0, -1
        if not part or first < 0 or last < first:
            raise AlqaInputError(None, f"--slices: {part!r} is not a slice index or a range like 30-32")
        out.update(range(first, last + 1))
    return tuple(sorted(out))
