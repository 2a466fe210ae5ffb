"""Where the campaign stands: the current round, its queue, its answers, convergence.

Computed from catalog tables only (``rounds``, ``queue``, ``submissions``),
so the sensors, the CLI's ``alqa status`` and the assets agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from alqa_core.annotation.inbox import submitted_slices
from alqa_core.annotation.priority import StopDecision, stop_rule
from alqa_core.catalog import Catalog


@dataclass(frozen=True)
class RoundState:
    round_index: int  # -1 before the first round
    queue: tuple[str, ...]  # this round's queue, top first
    answered: tuple[str, ...]  # queued cases with an accepted submission this round
    decision: StopDecision | None

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(c for c in self.queue if c not in set(self.answered))

    @property
    def converged(self) -> bool:
        return self.decision is not None and self.decision.converged

    @property
    def queue_answered(self) -> bool:
        """Every queued case revised or confirmed (and the queue was written)."""
        return bool(self.queue) and not self.pending


def accepted_submissions(catalog: Catalog, round_index: int | None = None) -> pd.DataFrame:
    subs = catalog.read("submissions")
    if subs.empty:
        return subs
    subs = subs[subs.status == "accepted"]
    if round_index is not None and "round" in subs:
        subs = subs[subs["round"] == round_index]
    return subs


def current_round(catalog: Catalog) -> int:
    rounds = catalog.read("rounds")
    return int(rounds["round"].max()) if not rounds.empty else -1


def round_state(catalog: Catalog) -> RoundState:
    t = current_round(catalog)
    queue = catalog.read("queue")
    if t < 0 or queue.empty or not (queue["round"] == t).any():
        return RoundState(t, (), (), None)
    q = queue[queue["round"] == t].sort_values("position")
    case_ids = tuple(q.case_id)
    subs = accepted_submissions(catalog, t)
    answered = tuple(c for c in case_ids if not subs.empty and c in set(subs.case_id))
    rows = [] if subs.empty else subs[["case_id", "kind"]].to_dict(orient="records")
    return RoundState(t, case_ids, answered, stop_rule(case_ids, rows))


def reviewed_cases(catalog: Catalog) -> set[str]:
    """Every case with an accepted revision or confirmation, any round."""
    subs = accepted_submissions(catalog)
    return set() if subs.empty else set(subs.case_id)


def revised_slices(catalog: Catalog) -> dict[str, tuple[int, ...]]:
    """Cases reviewed only slice by slice -> every slice revised so far (oldest first; a whole-volume answer ends it)."""
    subs = accepted_submissions(catalog)
    partial: dict[str, set[int]] = {}
    whole: set[str] = set()
    for r in ([] if subs.empty else subs.sort_values("submitted_at").itertuples()):
        slices = submitted_slices(r)
        if not slices:
            whole.add(r.case_id)
        elif r.case_id not in whole:
            partial.setdefault(r.case_id, set()).update(slices)
    return {c: tuple(sorted(k)) for c, k in partial.items() if c not in whole}


def awaiting_reassembly(catalog: Catalog, round_index: int) -> set[str]:
    """Accepted submissions of the round that no reassembled label accounts for yet."""
    subs = accepted_submissions(catalog, round_index)
    if subs.empty:
        return set()
    prov = catalog.read("provenance")
    seen: set[str] = set()
    if not prov.empty:
        seen |= set(prov.submission_id.dropna().astype(str))
        if "superseded" in prov:
            for s in prov.superseded.dropna().astype(str):
                seen |= {x for x in s.split(",") if x}
    return set(subs.submission_id.astype(str)) - seen
