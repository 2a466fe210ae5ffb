"""``alqa status``: where the campaign stands, from the catalog alone (round states, queue, submissions, errors, effort).

Given the campaign's config, it also lists the prediction folders no member
names (from the datasets' listings) and takes the round timeout into account.
What the campaign waits for is the round state machine's own decision
(:func:`~alqa_core.annotation.labelled.rounds.what_next`), as the round sensor
and ``alqa round`` act on it; the case counts are
:func:`~alqa_core.case_errors.case_counts`, as every command's summary prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd

from alqa_core.annotation.labelled.rounds import RoundState, round_state, what_next
from alqa_core.case_errors import CaseCounts, case_counts, read_case_errors
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig
from alqa_core.ingest.dataset import unlisted_prediction_folders
from alqa_core.rounds import RoundDecision, RoundRecord, read_rounds
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class CampaignStatus:
    workspace: str
    n_cases: int
    state: RoundState
    rounds: tuple[RoundRecord, ...]
    submissions: pd.DataFrame
    effort: pd.DataFrame
    errors: pd.DataFrame
    counts: CaseCounts | None = None
    #: members that failed for a case which went on without them (case_errors rows with a member)
    failed_members: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: what the round state machine decides comes next (the round sensor and ``alqa round`` act on it)
    next: RoundDecision | None = None
    #: folder name under the datasets' ``predictions/`` that no member names -> where (never read)
    unlisted: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    #: cases with attention in the current round (predicted)
    predicted: tuple[str, ...] = ()

    def render(self) -> str:
        s = self.state
        lines = [f"workspace {self.workspace}: " + (self.counts.render() if self.counts is not None else f"{self.n_cases} cases ingested")]
        for name, folders in self.unlisted.items():
            where = ", ".join(f.parent.parent.name for f in folders)
            lines.append(f"predictions/{name}/ in {len(folders)} dataset(s) ({where}): no member names it, so it is never read "
                         "(name it under external_members to use it)")
        if not self.errors.empty:
            lines.append(f"cases with an open error: {self.errors.case_id.nunique()}")
            lines += [f"  {r.case_id} [{r.stage}] {r.file}: {r.reason}" for r in self.errors.itertuples()]
        if not self.failed_members.empty:
            lines.append(f"cases that went on without a failed member: {self.failed_members.case_id.nunique()}")
            lines += [f"  {r.case_id} [{r.stage}] member {r.member}: {r.file}: {r.reason}; went on with {r.went_on_with}"
                      for r in self.failed_members.itertuples()]
        if s.round_index < 0:
            return "\n".join(lines + [_next_line(self.next) if self.next is not None else "no round started yet (alqa round, or materialize round_job)"])
        lines.append("rounds:")
        lines += [f"  round {r.round_index}: {r.state:9s} (attempt {r.attempts}) {r.reason}" for r in self.rounds]
        if self.counts is not None:
            lines.append(self._round_cases())
        if s.queue:
            lines.append(f"round {s.round_index} queue of {len(s.queue)} (top: {s.queue[0]}), answered {len(s.answered)}/{len(s.queue)}")
        if s.pending and s.state == "queued":
            lines.append("  waiting for: " + ", ".join(s.pending))
        subs = self.submissions
        counts = subs.status.value_counts().to_dict() if not subs.empty else {}
        lines.append("submissions: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("accepted", "rejected", "duplicate")))
        if not subs.empty:
            for r in subs[subs.status == "rejected"].sort_values("entry").itertuples():
                lines.append(f"  rejected {r.entry}: {r.reasons}")
            for r in subs[(subs["status"] == "accepted") & (subs["flags"].fillna("") != "")].itertuples():
                lines.append(f"  flagged {r.entry}: {r.flags}")
        if not self.effort.empty:
            from alqa_core.annotation.labelled.effort_summary import summarize_effort

            summary = summarize_effort(self.effort)
            lines.append("effort per round and annotator:")
            lines += ["  " + line for line in summary.to_string(index=False).splitlines()]
        if s.converged:
            lines.append("CONVERGED: " + (self.next.reason if self.next is not None else f"in round {s.round_index}: {s.record.reason if s.record else ''}"))
        else:
            closing = self.next is not None and self.next.close is not None  # timed out: nobody waits for a verdict any more
            if s.decision is not None and s.state in ("queued", "answered") and not closing:  # the top case's verdict converges the campaign
                lines.append("not converged: " + s.decision.reason)
            if self.next is not None:
                lines.append(_next_line(self.next))
        return "\n".join(lines)

    def _round_cases(self) -> str:
        """The current round's ingested cases: predicted (some without a failed member), refused at prediction, the rest."""
        ingested = set(self.counts.ingested)
        predicted = ingested & set(self.predicted)
        refused = ingested & set(self.errors[self.errors.stage == "soft_predictions"].case_id) - predicted
        degraded = predicted & set(self.failed_members.case_id) if not self.failed_members.empty else set()
        rest = len(ingested) - len(predicted) - len(refused)
        tail = f", {rest} not predicted in this round" if rest else ""
        return (f"round {self.state.round_index} over {len(ingested)} ingested cases: {len(predicted)} predicted "
                f"({len(degraded)} without a failed member), {len(refused)} refused at prediction{tail}")


def _next_line(decision: RoundDecision) -> str:
    """What the campaign waits for, in the state machine's words, and who acts on it."""
    if decision.run is None:
        return ("done: " if decision.done else "waiting: ") + decision.reason
    return "next: " + decision.reason + ("" if decision.by_hand else " (the round sensor launches it, or alqa round)")


def _predicted(catalog: Catalog, round_index: int) -> tuple[str, ...]:
    """Cases with attention rows in round ``round_index`` (partition names ``<case>_round_<t>``: a listing, no read)."""
    suffix = f"_round_{int(round_index):03d}"
    return tuple(p[: -len(suffix)] for p in catalog.partitions("attention_case") if p.endswith(suffix))


def campaign_status(layout: WorkspaceLayout, config: CampaignConfig | None = None) -> CampaignStatus:
    """Where the campaign stands; with ``config``, also the prediction folders no member names and the round timeout."""
    cat = Catalog(layout.catalog)
    errors, failed_members = read_case_errors(cat)
    counts = case_counts(cat, errors=errors)
    state = round_state(cat)
    unlisted = unlisted_prediction_folders([d.path for d in config.datasets], config.member_names) if config is not None else {}
    return CampaignStatus(
        str(layout.root), len(counts.ingested), state, tuple(read_rounds(cat)), cat.read("submissions"), cat.read("effort"), errors,
        counts=counts, failed_members=failed_members, next=what_next(cat, config.rounds.timeout_hours if config is not None else None, state=state),
        unlisted=unlisted, predicted=_predicted(cat, state.round_index) if state.round_index >= 0 else (),
    )
