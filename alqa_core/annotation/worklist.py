"""An annotator's worklist: the current round's queue in priority order, what is answered or waiting, and the next case.

``alqa serve`` answers MONAI Label's "Next sample" and the web worklist from
this one view. A case is *answered* once a submission for it was accepted in
the round (as :func:`alqa_core.annotation.rounds.round_state` counts it), and
*waiting* while a submission for it sits in the inbox (the sensor has not
taken it yet). The next case for an annotator is the first one in priority
order that is neither, preferring cases no other annotator holds right now
(``held_by``: the server's short leases, so two annotators opening "Next
sample" together get different cases); when every open case is held, the
first held one is given rather than none (a second review beats an idle
annotator). Only a ``queued`` round is served: a closed, answered or
converged round, or the next round still being computed, has nothing to hand out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from alqa_core.annotation.inbox import read_meta, scan_inbox
from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError
from alqa_core.rounds import latest_round


@dataclass(frozen=True)
class WorkItem:
    """One queued case of the round, with who answered it and who has a submission waiting."""

    case_id: str
    round_index: int
    position: int
    package_id: str
    organs: tuple[str, ...]
    score: float
    answered_by: tuple[str, ...] = ()
    waiting_by: tuple[str, ...] = ()

    @property
    def answered(self) -> bool:
        return bool(self.answered_by)

    @property
    def open(self) -> bool:
        return not self.answered_by and not self.waiting_by


@dataclass(frozen=True)
class Worklist:
    round_index: int  # -1 before the first round
    state: str  # "" before the first round
    items: tuple[WorkItem, ...]

    @property
    def serving(self) -> bool:
        """Only a queued round hands out cases."""
        return self.state == "queued"

    @property
    def completed(self) -> int:
        return sum(1 for i in self.items if i.answered)

    def item(self, case_id: str) -> WorkItem | None:
        return next((i for i in self.items if i.case_id == case_id), None)


def _organs(value) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    if isinstance(value, str):
        return tuple(o for o in value.split(",") if o)
    return tuple(str(o) for o in value)


def inbox_waiting(inbox: Path) -> dict[str, set[str]]:
    """Case -> annotators with a complete submission still in the inbox (hand drops included, settled or not)."""
    waiting: dict[str, set[str]] = {}
    for entry in scan_inbox(Path(inbox), settle_seconds=0.0):
        try:
            meta = read_meta(entry)
        except AlqaInputError:
            continue  # the sensor quarantines it; it answers nothing
        waiting.setdefault(meta.case_id, set()).add(meta.annotator)
    return waiting


def read_worklist(catalog: Catalog, inbox: Path) -> Worklist:
    """The current round's queue, top first, each case with its answers and waiting submissions."""
    rec = latest_round(catalog)
    if rec is None:
        return Worklist(-1, "", ())
    t = rec.round_index
    if not catalog.partitions("queue"):
        return Worklist(t, rec.state, ())
    queue = catalog.query("SELECT * FROM queue WHERE round = ? ORDER BY position", [t])
    if queue.empty:
        return Worklist(t, rec.state, ())
    answered: dict[str, set[str]] = {}
    if catalog.partitions("submissions"):
        subs = catalog.query("SELECT case_id, annotator FROM submissions WHERE status = 'accepted' AND round = ?", [t])
        for case_id, annotator in zip(subs.case_id, subs.annotator):
            answered.setdefault(str(case_id), set()).add(str(annotator))
    waiting = inbox_waiting(inbox)
    packages = queue["package_id"] if "package_id" in queue else [""] * len(queue)
    organs_of = queue["organs"] if "organs" in queue else [None] * len(queue)
    scores = queue["score"] if "score" in queue else [np.nan] * len(queue)
    items = tuple(
        WorkItem(
            str(case_id), t, int(position), "" if package is None or pd.isna(package) else str(package), _organs(organs),
            float("nan") if score is None else float(score),
            tuple(sorted(answered.get(str(case_id), ()))), tuple(sorted(waiting.get(str(case_id), ()))),
        )
        for case_id, position, package, organs, score in zip(queue.case_id, queue.position, packages, organs_of, scores)
    )
    return Worklist(t, rec.state, items)


def next_item(worklist: Worklist, annotator: str, held_by: Mapping[str, str] | None = None) -> WorkItem | None:
    """The next case for ``annotator``: the first open one no one else holds, else the first open one; None when none."""
    if not worklist.serving:
        return None
    held_by = held_by or {}
    candidates = [i for i in worklist.items if i.open]
    free = [i for i in candidates if held_by.get(i.case_id, annotator) == annotator]
    return (free or candidates or [None])[0]


__all__ = ["WorkItem", "Worklist", "inbox_waiting", "next_item", "read_worklist"]
