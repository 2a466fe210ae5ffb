"""Where the campaign stands: the current round's state, its queue and answers, the transitions answers cause, what comes next.

The state comes from the round state machine (:mod:`alqa_core.rounds`); the
queue, the answers and what waits for reassembly come from the catalog's
``queue``, ``submissions`` and ``provenance`` tables. The sensors, ``alqa
status``, ``alqa round`` and the assets all read this one view, and
:func:`what_next` hands the state machine's :func:`~alqa_core.rounds.decide`
these facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from alqa_core.annotation.intake.inbox import submitted_slices
from alqa_core.annotation.queue.priority import StopDecision, stop_rule
from alqa_core.catalog import Catalog
from alqa_core.rounds import IllegalTransition, RoundDecision, RoundRecord, decide, latest_round, transition


@dataclass(frozen=True)
class RoundState:
    round_index: int  # -1 before the first round
    state: str  # "" before the first round; else one of alqa_core.rounds.STATES
    queue: tuple[str, ...]  # this round's queue, top first
    answered: tuple[str, ...]  # queued cases with an accepted submission since the queue was written
    decision: StopDecision | None
    record: RoundRecord | None = None

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(c for c in self.queue if c not in set(self.answered))

    @property
    def converged(self) -> bool:
        return self.state == "converged"

    @property
    def queue_answered(self) -> bool:
        """Every queued case revised or confirmed (and the queue was written)."""
        return self.state in ("queued", "answered", "closed", "converged") and not self.pending


def accepted_submissions(catalog: Catalog, round_index: int | None = None) -> pd.DataFrame:
    subs = catalog.read("submissions")
    if subs.empty:
        return subs
    subs = subs[subs.status == "accepted"]
    if round_index is not None and "round" in subs:
        subs = subs[subs["round"] == round_index]
    return subs


def round_queue(catalog: Catalog, round_index: int) -> pd.DataFrame:
    """The round's queue rows, top first (empty if the round has no queue, or an empty one)."""
    queue = catalog.read("queue")
    if queue.empty:
        return queue
    return queue[queue["round"] == round_index].sort_values("position")


def round_state(catalog: Catalog) -> RoundState:
    rec = latest_round(catalog)
    if rec is None:
        return RoundState(-1, "", (), (), None)
    t = rec.round_index
    q = round_queue(catalog, t)
    case_ids = tuple(q.case_id) if not q.empty else ()
    subs = accepted_submissions(catalog, t)
    answered = tuple(c for c in case_ids if not subs.empty and c in set(subs.case_id))
    rows = [] if subs.empty else subs[["case_id", "kind"]].to_dict(orient="records")
    decision = stop_rule(case_ids, rows) if rec.state in ("queued", "answered", "closed", "converged") else None
    return RoundState(t, rec.state, case_ids, answered, decision, rec)


def advance_on_answers(catalog: Catalog) -> RoundRecord | None:
    """After answers were reassembled: a queued round becomes ``converged`` (top case confirmed) or ``answered``.

    Returns the new record, or None when nothing changed (the round is not
    queued, or answers are still pending or not yet reassembled).
    """
    s = round_state(catalog)
    if s.state != "queued" or s.decision is None:
        return None
    waiting = awaiting_reassembly(catalog, s.round_index)
    if s.decision.converged and s.decision.top_case is not None and s.decision.top_case not in _cases_of(catalog, waiting):
        return transition(catalog, s.round_index, "converged", s.decision.reason)
    if s.pending or waiting:
        return None
    return transition(catalog, s.round_index, "answered", f"all {len(s.queue)} queued cases answered and reassembled")


def close_round(catalog: Catalog, reason: str) -> RoundRecord:
    """Close the current queued round with unanswered cases (they go back to the pool); the next round may start."""
    s = round_state(catalog)
    if s.state != "queued":
        raise IllegalTransition(f"round {s.round_index} is {s.state or 'not started'}; only a queued round can be closed")
    pending = ", ".join(s.pending) or "none"
    return transition(catalog, s.round_index, "closed", f"{reason} (unanswered, back to the pool: {pending})")


def what_next(catalog: Catalog, timeout_hours: float | None = None, now: datetime | None = None, state: RoundState | None = None) -> RoundDecision:
    """What the round loop does next (:func:`alqa_core.rounds.decide` on the catalog's facts); the round sensor and ``alqa round`` act on it.
    ``state``: :func:`round_state` of ``catalog``, when the caller has it already."""
    s = round_state(catalog) if state is None else state
    waiting = awaiting_reassembly(catalog, s.round_index) if s.record is not None else set()
    return decide(s.record, len(s.pending), len(s.queue), len(waiting), timeout_hours, now)


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
    """Accepted submissions of the round (ids) that no reassembled label accounts for yet."""
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


def _cases_of(catalog: Catalog, submission_ids: set[str]) -> set[str]:
    if not submission_ids:
        return set()
    subs = catalog.read("submissions")
    return set(subs[subs.submission_id.astype(str).isin(submission_ids)].case_id)


__all__ = [
    "RoundState",
    "accepted_submissions",
    "advance_on_answers",
    "awaiting_reassembly",
    "close_round",
    "reviewed_cases",
    "revised_slices",
    "round_queue",
    "round_state",
    "what_next",
]
